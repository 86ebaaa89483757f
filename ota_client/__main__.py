from ota_client.cli import main

main()
