"""Install benchmark: full-image updates through the real server and client, against dd.

Publishes large images, serves them with ``ota serve`` on loopback, and times ``ota-client
update`` on a vehicle with file slots and simulated boot control: download (streamed into the
inactive slot, checkpointed) -> verify -> read-back verify -> arm -> trial -> commit. Two rows:
one ECU taking a 1 GiB image, and a two-ECU bundle (two images of half the size, installed
together). In the same run it times an fsync'd copy of the same bytes (``dd conv=fsync``),
the floor for writing them. Peak RSS from GNU time.

    make bench-install          (python -m bench.install [--mib 1024])
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.delta import timed
from tests.helpers import serve
from tests.vehicle import Ecu, Vehicle

PY = sys.executable


def make_image(path: Path, mib: int, salt: int) -> None:
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(mib):
            k = (i + salt) % 7
            f.write(block[k:] + block[:k])  # distinct blocks, cheap to make


def publish(home: Path, work: Path, images: dict[str, str]) -> None:
    ota = [PY, "-m", "ota_server", "--home", str(home)]
    text = 'bundle = "big"\nversion = "1.0"\n'
    for ecu, hwid in images.items():
        text += f'[[images]]\necu = "{ecu}"\nfile = "{ecu}.img"\nhardware_ids = ["{hwid}"]\n'
    (work / "release.toml").write_text(text)
    subprocess.run([*ota, "release", "publish", "-q", str(work / "release.toml")], check=True)


def row(work: Path, mib: int, ecus: dict[str, str]) -> tuple[float, int, float]:
    """(seconds, peak RSS KiB, dd seconds) for one vehicle taking ``ecus`` (ecu -> hwid)."""
    home = work / "home"
    ota = [PY, "-m", "ota_server", "--home", str(home)]
    subprocess.run([*ota, "keys", "init", "--dev"], check=True, capture_output=True)
    subprocess.run([*ota, "repo", "init"], check=True, capture_output=True)
    (home / "config.toml").write_text("[deltas]\nsources = 0\n")
    each = mib // len(ecus)
    for i, ecu in enumerate(ecus):
        make_image(work / f"{ecu}.img", each, i)
    publish(home, work, ecus)
    with serve(home) as url:
        root = work / "vehicle"
        root.mkdir()
        shutil.copy(home / "repo/metadata/1.root.json", root / "root.json")
        car = Vehicle(
            root,
            url.removesuffix("/repo"),
            ecus=[Ecu(serial=e.upper(), hardware_id=h, prefix=f"{e}-") for e, h in ecus.items()],
        )
        seconds, rss = timed(f"{PY} -m ota_client -c {car.config} update", work)
        for ecu in ecus:
            written = car.slot("b", ecu.upper()).read_bytes()[: each << 20]
            assert written == (work / f"{ecu}.img").read_bytes(), f"slot b of {ecu} is wrong"
        dd = 0.0
        for ecu in ecus:
            cmd = f"dd if={work}/{ecu}.img of={work}/copy-{ecu}.img bs=1M conv=fsync status=none"
            dd += timed(cmd, work)[0]
    return seconds, rss, dd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    mb = (args.mib << 20) / 1e6
    print(f"| {args.mib} MiB in all | seconds | MB/s | peak RSS MiB | dd conv=fsync s | share |")
    print("|---|---|---|---|---|---|")
    for label, ecus in (
        ("one ECU, one image", {"hu": "hu-hw"}),
        ("two-ECU bundle, two images", {"hu": "hu-hw", "tcu": "tcu-hw"}),
    ):
        with tempfile.TemporaryDirectory(prefix="ota-install-") as tmp:
            seconds, rss, dd = row(Path(tmp), args.mib, ecus)
        print(
            f"| ota-client update: {label} | {seconds:.1f} | {mb / seconds:.0f} "
            f"| {rss / 1024:.0f} | {dd:.1f} | {dd / seconds:.0%} |"
        )
    print("\nwant: >= 450 MB/s and <= 64 MiB peak RSS for the 1 GiB image on loopback")


if __name__ == "__main__":
    main()
