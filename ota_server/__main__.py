from ota_server.cli.main import main

main()
