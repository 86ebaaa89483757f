#!/usr/bin/env bash
# The whole story on one machine, on embedded defaults: keys, repository, releases, a server,
# and a vehicle-side client verifying what it downloads. Run it with `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
export OTA_HOME="${OTA_HOME:-$PWD/demo-home}"
rm -rf "$OTA_HOME"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Release manager: create (dev) keys and an empty Image repository in $OTA_HOME"
ota keys init --dev
ota repo init

step "Release manager: publish the example releases"
for m in manifests/examples/body-control-1.0.0.toml manifests/examples/infotainment-2.0.0.toml \
         manifests/examples/body-control-1.1.0.toml manifests/examples/infotainment-2.1.0.toml; do
  ota release publish "$m"
done
ota release list
ota repo status

step "Serve the repository on 127.0.0.1"
log="$(mktemp)"
ota serve --insecure-http --port 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 50); do grep -q '^serving' "$log" && break; sleep 0.1; done
url="$(sed -n 's/^serving .* at \(http[^ ]*\)/\1/p' "$log")"
echo "server: $url"

step "Vehicle: verify and download the newest body-control image, trusting only 1.root.json"
ota-client fetch --allow-insecure-http --repo "$url" --trust-root "$OTA_HOME/repo/metadata/1.root.json" \
  --cache "$OTA_HOME/vehicle-cache" -o "$OTA_HOME/vehicle-downloads" bcm-s32k/bcm-1.1.0.bin
cmp "$OTA_HOME/vehicle-downloads/bcm-1.1.0.bin" manifests/examples/images/bcm-1.1.0.bin
echo "downloaded image matches the published one"

step "Rotate the timestamp key; the vehicle follows the new root"
ota keys rotate timestamp
ota-client fetch --allow-insecure-http --repo "$url" --trust-root "$OTA_HOME/repo/metadata/1.root.json" \
  --cache "$OTA_HOME/vehicle-cache" tcu-9150/telematics-2.1.0.bin

step "Tamper with a published image on the server: the vehicle refuses it"
victim="$(ls "$OTA_HOME"/repo/targets/hu-imx8/*head-unit-2.1.0.img)"
printf 'X' | dd of="$victim" bs=1 seek=100 conv=notrunc status=none
if ota-client fetch --allow-insecure-http --repo "$url" --trust-root "$OTA_HOME/repo/metadata/1.root.json" \
     --cache "$OTA_HOME/vehicle-cache" hu-imx8/head-unit-2.1.0.img; then
  echo "demo failed: the tampered image was accepted" >&2; exit 1
fi
echo "tampered image rejected, as it must be"
step "Vehicle: a body control module on 1.0.0 updates itself (A/B slots, simulated bootloader)"
car="$OTA_HOME/vehicle"
mkdir -p "$car"
cp manifests/examples/images/bcm-1.0.0.bin "$car/slot-a.img"
cp "$OTA_HOME/repo/metadata/1.root.json" "$car/root.json"
cat >"$car/client.toml" <<EOF
vehicle_id = "DEMO0001"
server = "${url%/repo/}"
trust_root = "root.json"
mode = "track-latest"
data_dir = "data"
[network]
allow_insecure_http = true   # the demo serves plain HTTP on 127.0.0.1
[[ecus]]
serial = "BCM-1"
hardware_id = "bcm-s32k"
slots = { a = "slot-a.img", b = "slot-b.img", size = 1048576 }
[[ecus.health]]
command = ["true"]
EOF
ota-client -c "$car/client.toml" check
ota-client -c "$car/client.toml" -v update
ota-client -c "$car/client.toml" status

step "Done. State is in $OTA_HOME"
