"""Director benchmark: signing per vehicle, the bytes of an unchanged poll, provisioning.

Three tables, measured in one run on this machine:

* signing a vehicle's Director metadata (targets, snapshot, timestamp; three ed25519
  signatures) for a two-ECU assignment, and checking that stored metadata is still current
  (what every poll does);
* the bytes on the wire of a vehicle's poll of ``timestamp.json`` through the real
  ``ota serve``, request and response headers included: the first (200) and an unchanged
  one (304, ``If-None-Match``), over plain HTTP on loopback (TLS adds its record framing,
  about 30 bytes each way on a kept-alive connection);
* ``ota vehicle provision --from-csv`` of N two-ECU vehicles (keys, certificates, kits, the
  inventory rows), in one command;
* the Image metadata a vehicle downloads to verify one update (timestamp, snapshot and the
  targets metadata that lists the image) for repositories of 100 to 100,000 targets, built
  with the publisher's own signing and serialisation (one signed targets role today).

    make bench-director       (python -m bench.director [--vehicles 10000] [--signs 2000])
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tuf.api.metadata import Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

from ota_client.metadata import TargetCustom
from ota_server.config import load_config
from ota_server.director.sign import is_current, sign_vehicle
from ota_server.repository.home import open_home
from ota_server.repository.signing import RoleSigning
from ota_server.repository.store import latest_root, metadata_bytes
from tests.helpers import EXAMPLES, make_home, serve
from tests.test_uptane_match import world

PY = sys.executable


def signing(home: Path, count: int) -> tuple[float, float]:
    director = open_home(load_config(home), "director", lambda _new: b"")
    root, signer, policy = latest_root(director.files), RoleSigning(director.keys), director.policy
    assignment, now = world(2).assignment, datetime.now(UTC)
    start = time.perf_counter()
    signed = None
    for _ in range(count):
        signed = sign_vehicle(assignment, None, root, signer, policy, now)
    sign_s = (time.perf_counter() - start) / count
    assert signed is not None
    start = time.perf_counter()
    for _ in range(count):
        assert is_current(signed, assignment, root, policy, now)
    return sign_s, (time.perf_counter() - start) / count


def _exchange(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection((host, port)) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += s.recv(65536)
        return len(request), head + b"\r\n\r\n" + body


def poll_bytes(home: Path, work: Path) -> tuple[int, int, int, int]:
    ota = [PY, "-m", "ota_server", "--home", str(home)]
    subprocess.run(
        [*ota, "vehicle", "provision", "VIN0001", "--ecu", "HU-1:hu-imx8", "--ecu",
         "TCU-1:tcu-9150", "--out", str(work / "car")],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*ota, "assign", "VIN0001", "infotainment@2.1.0"], check=True, capture_output=True
    )
    with serve(home) as url:
        host, port = url.removeprefix("http://").split("/")[0].split(":")
        path = "/director/VIN0001/metadata/timestamp.json"
        ask = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ota-client\r\n"
        sent, reply = _exchange(host, int(port), (ask + "\r\n").encode())
        etag = next(
            line.split(b":", 1)[1].strip().decode()
            for line in reply.split(b"\r\n")
            if line.lower().startswith(b"etag:")
        )
        sent2, reply2 = _exchange(
            host, int(port), (ask + f"If-None-Match: {etag}\r\n\r\n").encode()
        )
        assert reply2.startswith(b"HTTP/1.1 304"), reply2[:40]
    return sent, len(reply), sent2, len(reply2)


def provisioning(home: Path, work: Path, vehicles: int) -> float:
    csv = work / "fleet.csv"
    rows = ["vin,serial,hardware_id"]
    for n in range(vehicles):
        rows += [f"SIM-{n:06d},HU-{n:06d},hu-imx8", f"SIM-{n:06d},TCU-{n:06d},tcu-9150"]
    csv.write_text("\n".join(rows) + "\n")
    ota = [PY, "-m", "ota_server", "--home", str(home)]
    start = time.perf_counter()
    subprocess.run(
        [*ota, "vehicle", "provision", "--from-csv", str(csv), "--out", str(work / "kits"),
         "--json"],
        check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def metadata_scale(home: Path, counts: list[int]) -> list[tuple[int, int]]:
    image = open_home(load_config(home), "image", lambda _new: b"")
    root, signer = latest_root(image.files), RoleSigning(image.keys)
    out = []
    for count in counts:
        targets = Targets(version=2, expires=datetime.now(UTC))
        for n in range(count):
            path = f"hw-{n % 500:03d}/fw-{n}.bin"
            digest = hashlib.sha256(path.encode()).hexdigest()
            entry = TargetFile(1 << 24, {"sha256": digest}, path)
            custom = TargetCustom((f"hw-{n % 500:03d}",), n, f"1.{n}", f"bundle{n % 50}", "ecu")
            entry.unrecognized_fields["custom"] = custom.to_dict()
            targets.targets[path] = entry
        md: Metadata[Targets] = Metadata(targets)
        signer.sign("targets", md, [root])
        data = metadata_bytes(md)
        snapshot = Snapshot(meta={"targets.json": MetaFile.from_data(2, data, ["sha256"])})
        snap = Metadata(snapshot)
        signer.sign("snapshot", snap, [root])
        snap_bytes = metadata_bytes(snap)
        ts = Metadata(Timestamp(snapshot_meta=MetaFile.from_data(2, snap_bytes, ["sha256"])))
        signer.sign("timestamp", ts, [root])
        out.append((count, len(data) + len(snap_bytes) + len(metadata_bytes(ts))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--signs", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ota-director-") as tmp:
        work = Path(tmp)
        home = make_home(
            work, EXAMPLES / "infotainment-2.0.0.toml", EXAMPLES / "infotainment-2.1.0.toml"
        )
        sign_s, check_s = signing(home, args.signs)
        print("| Director, per vehicle (two ECUs) | microseconds |")
        print("|---|---|")
        print(f"| sign targets + snapshot + timestamp | {sign_s * 1e6:.0f} |")
        print(f"| check that stored metadata is current (every poll) | {check_s * 1e6:.0f} |")
        sent, got, sent2, got2 = poll_bytes(home, work)
        print("\n| poll of timestamp.json | request bytes | response bytes | total |")
        print("|---|---|---|---|")
        print(f"| first (200) | {sent} | {got} | {sent + got} |")
        print(f"| unchanged (304) | {sent2} | {got2} | {sent2 + got2} |")
        print("\n| Image repository targets | metadata to verify one update (bytes) |")
        print("|---|---|")
        for count, size in metadata_scale(home, [100, 10_000, 100_000]):
            print(f"| {count:,} | {size:,} |")
        seconds = provisioning(home, work, args.vehicles)
        print(f"\n| provision {args.vehicles:,} two-ECU vehicles (--from-csv) | seconds | per s |")
        print("|---|---|---|")
        print(f"| one command | {seconds:.1f} | {args.vehicles / seconds:.0f} |")


if __name__ == "__main__":
    main()
