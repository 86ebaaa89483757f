"""Install benchmark: a full-image update through the real server and client, against cp.

Publishes a large image, serves it with ``ota serve`` on loopback, and times ``ota-client
update`` on a vehicle with file slots and simulated boot control: download (streamed into the
inactive slot, checkpointed) -> verify -> read-back verify -> arm -> trial -> commit. In the
same run it times an fsync'd copy of the same file (``dd conv=fsync``), the floor for writing
those bytes. Peak RSS from GNU time.

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
from tests.vehicle import Vehicle

PY = sys.executable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.mib << 20
    with tempfile.TemporaryDirectory(prefix="ota-install-") as tmp:
        work = Path(tmp)
        image = work / "image.img"
        with open(image, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(args.mib):
                f.write(block[i % 7 :] + block[: i % 7])  # distinct blocks, cheap to make
        home = work / "home"
        ota = [PY, "-m", "ota_server", "--home", str(home)]
        subprocess.run([*ota, "keys", "init", "--dev"], check=True, capture_output=True)
        subprocess.run([*ota, "repo", "init"], check=True, capture_output=True)
        (work / "release.toml").write_text(
            'bundle = "big"\nversion = "1.0"\n[[images]]\necu = "hu"\nfile = "image.img"\n'
            'hardware_ids = ["bcm-s32k"]\n'
        )
        subprocess.run([*ota, "release", "publish", "-q", str(work / "release.toml")], check=True)
        with serve(home) as url:
            root = work / "vehicle"
            root.mkdir()
            shutil.copy(home / "repo/metadata/1.root.json", root / "root.json")
            car = Vehicle(root, url.removesuffix("/repo"))
            seconds, rss = timed(f"{PY} -m ota_client -c {car.config} update", work)
            assert car.slot("b").read_bytes()[:size] == image.read_bytes(), "slot b is wrong"
            dd = f"dd if={image} of={work}/copy.img bs=1M conv=fsync status=none"
            copy_s, _ = timed(dd, work)
        mbs = size / 1e6
        print(f"| {args.mib} MiB full image | seconds | MB/s | peak RSS MiB |\n|---|---|---|---|")
        print(
            f"| ota-client update (download, verify, write, read back, arm, trial, commit) "
            f"| {seconds:.1f} | {mbs / seconds:.0f} | {rss / 1024:.0f} |"
        )
        print(f"| dd conv=fsync (copy of the same file) | {copy_s:.1f} | {mbs / copy_s:.0f} | |")
        print(
            f"\ninstall speed = {copy_s / seconds:.0%} of an fsync'd copy (want >= 70%); "
            f"client peak RSS {rss / 1024:.0f} MiB (want <= 64)"
        )


if __name__ == "__main__":
    main()
