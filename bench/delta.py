"""Delta benchmark: this engine against the tools users would otherwise pick, side by side.

For every pair of the corpus (bench/corpus.py: real consecutive releases of public
executables, shared libraries and a package tar), each tool makes a delta from the old file to
the new one and applies it; the rebuilt file must match. Reported per pair and in total: size,
generation time, apply time and peak RSS (GNU time). Then a synthetic 1 GiB image measures the
applier's peak RSS and throughput on a copy-heavy payload.

    make bench-delta            (python -m bench.delta [--pairs ruff,esbuild] [--no-big])
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import PAIRS, Pair, fetch

PY = sys.executable
APPLY = (
    "from ota_client.payload.apply import apply_payload as a; import sys; "
    "a(open(sys.argv[1], 'rb'), open(sys.argv[2], 'wb'), open(sys.argv[3], 'rb'))"
)


@dataclass(frozen=True)
class Tool:
    name: str
    make: str  # shell command; {old} {new} {out}
    apply: str  # shell command; {old} {out} {res}
    needs_source: bool = True


TOOLS = [
    Tool(
        "ota (default: best)",
        f"{PY} -m ota_server payload diff -q {{old}} {{new}} {{out}}",
        f'{PY} -c "{APPLY}" {{out}} {{res}} {{old}}',
    ),
    Tool(
        "ota --effort fast",
        f"{PY} -m ota_server payload diff -q --effort fast {{old}} {{new}} {{out}}",
        f'{PY} -c "{APPLY}" {{out}} {{res}} {{old}}',
    ),
    Tool(
        "bsdiff4",
        f"{PY} -c 'import bsdiff4,sys; bsdiff4.file_diff(*sys.argv[1:])' {{old}} {{new}} {{out}}",
        f"{PY} -c 'import bsdiff4,sys; bsdiff4.file_patch(*sys.argv[1:])' {{old}} {{res}} {{out}}",
    ),
    Tool(
        "zstd -19 --long=31 --patch-from",
        "zstd -q -f -19 --long=31 --patch-from={old} {new} -o {out}",
        "zstd -q -f -d --long=31 --patch-from={old} {out} -o {res}",
    ),
    Tool(
        "xdelta3 -9", "xdelta3 -f -9 -e -s {old} {new} {out}", "xdelta3 -f -d -s {old} {out} {res}"
    ),
    Tool("xz -9 (full image)", "xz -9 -T1 -k -c {new} > {out}", "xz -d -c {out} > {res}", False),
]


@dataclass
class Run:
    size: int
    make_s: float
    make_rss: int  # KiB
    apply_s: float
    apply_rss: int


def timed(command: str, workdir: Path) -> tuple[float, int]:
    stats = workdir / "time.txt"
    subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", "-o", str(stats), "sh", "-c", command],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).parent.parent,
    )
    seconds, rss = stats.read_text().split()[-2:]
    return float(seconds), int(rss)


def measure(tool: Tool, old: Path, new: Path, work: Path) -> Run:
    out, res = work / "delta", work / "rebuilt"
    fields = {"old": old, "new": new, "out": out, "res": res}
    make_s, make_rss = timed(tool.make.format(**fields), work)
    apply_s, apply_rss = timed(tool.apply.format(**fields), work)
    if hashlib.sha256(res.read_bytes()).digest() != hashlib.sha256(new.read_bytes()).digest():
        raise SystemExit(f"{tool.name} did not rebuild {new}")
    run = Run(out.stat().st_size, make_s, make_rss, apply_s, apply_rss)
    out.unlink()
    res.unlink()
    return run


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def corpus_table(pairs: list[Pair], work: Path) -> None:
    totals = {t.name: Run(0, 0.0, 0, 0.0, 0) for t in TOOLS}
    print(
        "| pair | kind | new size | tool | delta bytes | vs bsdiff4 | make s | make MiB "
        "| apply s | apply MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pair in pairs:
        old, new = fetch(pair, "old"), fetch(pair, "new")
        runs = {t.name: measure(t, old, new, work) for t in TOOLS}
        base = runs["bsdiff4"].size
        for name, r in runs.items():
            print(
                f"| {pair.name} | {pair.kind} | {new.stat().st_size:,} | {name} | {r.size:,} | "
                f"{r.size / base:.2f} | {r.make_s:.1f} | {mib(r.make_rss)} | {r.apply_s:.2f} | "
                f"{mib(r.apply_rss)} |"
            )
            t = totals[name]
            t.size += r.size
            t.make_s += r.make_s
            t.apply_s += r.apply_s
            t.make_rss = max(t.make_rss, r.make_rss)
            t.apply_rss = max(t.apply_rss, r.apply_rss)
        sys.stdout.flush()
    base = totals["bsdiff4"]
    print(
        "\n| total | delta bytes | vs bsdiff4 | make s | make faster than bsdiff4 | apply s "
        "| max apply MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, t in totals.items():
        print(
            f"| {name} | {t.size:,} | {t.size / base.size:.3f} | {t.make_s:.1f} | "
            f"{base.make_s / t.make_s:.2f}x | {t.apply_s:.2f} | {mib(t.apply_rss)} |"
        )
    ours = totals["ota (default: best)"]
    zstd = totals["zstd -19 --long=31 --patch-from"]
    print(
        f"\ntargets: size {ours.size / base.size:.3f} x bsdiff4 (want <= 0.80), "
        f"{ours.size / zstd.size:.3f} x zstd (want <= 1); "
        f"generation {base.make_s / ours.make_s:.2f}x faster than bsdiff4 (want >= 3); "
        f"apply peak RSS {mib(ours.apply_rss)} MiB (want <= 64)"
    )


def big_image(work: Path, gib: float) -> None:
    """A copy-heavy delta on a large image: the applier's RSS and throughput."""
    size = int(gib * (1 << 30))
    old, new = work / "big-old.img", work / "big-new.img"
    block = 1 << 20
    with open(old, "wb") as f:
        for i in range(size // block):
            f.write(bytes(block) if i % 9 == 8 else os.urandom(block))
    shutil.copyfile(old, new)
    with open(new, "r+b") as f:  # a few patched places, as in a fix release
        for i in range(0, size, 37 * block):
            f.seek(i + 4096)
            f.write(os.urandom(512))
    payload, res = work / "big.payload", work / "big-rebuilt.img"
    make_s, make_rss = timed(f"{PY} -m ota_server payload diff -q {old} {new} {payload}", work)
    apply_s, apply_rss = timed(f'{PY} -c "{APPLY}" {payload} {res} {old}', work)
    copy_s, _ = timed(f"cp {old} {work}/copy.img && sync {work}/copy.img", work)
    ok = hashlib.sha256(res.read_bytes()).digest() == hashlib.sha256(new.read_bytes()).digest()
    print(f"\n| {gib:g} GiB image, copy-heavy | value |\n|---|---|")
    print(f"| payload bytes | {payload.stat().st_size:,} |")
    print(f"| make | {make_s:.1f} s, {mib(make_rss)} MiB peak |")
    print(
        f"| apply | {apply_s:.1f} s = {size / apply_s / 1e6:.0f} MB/s, {mib(apply_rss)} MiB peak |"
    )
    print(f"| cp + sync of the same image | {copy_s:.1f} s = {size / copy_s / 1e6:.0f} MB/s |")
    print(f"| rebuilt image matches | {ok} |")
    for p in (old, new, payload, res, work / "copy.img"):
        p.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", help="comma-separated pair names (default: all)")
    parser.add_argument("--no-big", action="store_true", help="skip the 1 GiB image")
    parser.add_argument("--big-gib", type=float, default=1.0)
    args = parser.parse_args()
    pairs = [p for p in PAIRS if not args.pairs or p.name in args.pairs.split(",")]
    zstd = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    cores, python = os.cpu_count(), platform.python_version()
    print(f"machine: {platform.machine()}, {cores} cores, Python {python}; {zstd}\n")
    with tempfile.TemporaryDirectory(prefix="ota-bench-") as tmp:
        work = Path(tmp)
        corpus_table(pairs, work)
        if not args.no_big:
            big_image(work, args.big_gib)


if __name__ == "__main__":
    main()
