"""Publish benchmark: a 256 MiB image, a 1,000-image release, and metadata sizes.

Compares ``ota release publish`` with the floor any publisher pays — hashing and a durable
copy of the same bytes (``sha256sum`` + ``cp`` + ``sync``) — measured side by side.

    make bench-publish          (or: python -m bench.publish [--mib 256] [--targets 1000])
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(*args: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def ota(home: Path, *args: str) -> float:
    return run(sys.executable, "-m", "ota_server", "--home", str(home), *args)


def manifest(
    directory: Path, bundle: str, version: str, images: list[tuple[str, str, str]]
) -> Path:
    text = f'bundle = "{bundle}"\nversion = "{version}"\n'
    for ecu, file, hwid in images:
        text += f'[[images]]\necu = "{ecu}"\nfile = "{file}"\nhardware_ids = ["{hwid}"]\n'
    path = directory / f"{bundle}-{version}.toml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--releases", type=int, default=5, help="1,000-target releases in a row")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ota-bench-"))
    try:
        home = work / "home"
        ota(home, "keys", "init", "--dev")
        ota(home, "repo", "init")
        rows: list[tuple[str, str, str]] = []

        big = work / "big.img"
        with open(big, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        floor = run(
            "sh", "-c", f"sha256sum {big} >/dev/null && cp {big} {work}/copy && sync {work}/copy"
        )
        t = ota(
            home,
            "release",
            "publish",
            "-q",
            str(manifest(work, "big", "1", [("ecu", "big.img", "hw-big")])),
        )
        rows.append((f"{args.mib} MiB image", f"{t:.2f} s", f"{floor:.2f} s"))

        for r in range(args.releases):
            d = work / f"many{r}"
            d.mkdir()
            images = []
            for i in range(args.targets):
                (d / f"{i}.bin").write_bytes(os.urandom(4096))
                images.append((f"ecu{i}", f"{i}.bin", f"hw{i}"))
            t = ota(
                home, "release", "publish", "-q", str(manifest(d, "fleet", f"{r + 1}.0", images))
            )
            floor = run("sh", "-c", f"sha256sum {d}/*.bin >/dev/null && cp -r {d} {d}.copy && sync")
            existing = r * args.targets
            rows.append(
                (
                    f"{args.targets} x 4 KiB images (after {existing} targets)",
                    f"{t:.2f} s",
                    f"{floor:.2f} s",
                )
            )

        print("| publish | ota release publish | sha256sum + cp + sync |")
        print("|---|---|---|")
        for row in rows:
            print(f"| {' | '.join(row)} |")
        md = home / "repo" / "metadata"
        print("\n| metadata file | bytes |")
        print("|---|---|")
        latest = max(md.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
        snapshot = max(md.glob("*.snapshot.json"), key=lambda p: int(p.name.split(".")[0]))
        total_targets = 1 + args.releases * args.targets
        for name, path in [
            ("1.root.json", md / "1.root.json"),
            ("timestamp.json", md / "timestamp.json"),
            (snapshot.name, snapshot),
            (f"{latest.name} ({total_targets} targets)", latest),
        ]:
            print(f"| {name} | {path.stat().st_size:,} |")
        per = latest.stat().st_size / total_targets
        print(f"\ntargets metadata: {per:.0f} bytes per target")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
