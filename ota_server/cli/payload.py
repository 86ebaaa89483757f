"""``ota payload``: make, apply and inspect payloads (for integrators and benchmarks)."""

from __future__ import annotations

import os
import stat
from contextlib import nullcontext
from pathlib import Path

import click

from ota_client.atomic import atomic_file
from ota_client.payload.apply import apply_payload, read_header
from ota_client.payload.format import OP, PayloadError, parse_op
from ota_client.strict import printable
from ota_server.cli.params import file_path
from ota_server.cli.render import echo_json, echo_table, progress
from ota_server.config import MAX_JOBS
from ota_server.errors import InputError
from ota_server.payload.generate import DEFAULT_CHUNK, EFFORTS, MAX_CHUNK, generate

FILE = file_path()


@click.group()
def payload() -> None:
    """Delta and full-image payloads (chunked bsdiff4 / zstd / xz operations)."""


def _check_input(path: Path, what: str) -> None:
    if not path.is_file():
        raise InputError(f"{what} {printable(str(path))} is not a readable file")


def _check_output(path: Path, *inputs: Path | None) -> None:
    """Refuse, before any work, an output that cannot be (or must not be) replaced: a device,
    FIFO or directory (atomic replacement would swap out the node itself), a missing folder,
    or one of the command's own inputs."""
    where = printable(str(path))
    if not path.name or not path.parent.is_dir():
        raise InputError(f"output {where}: no such folder")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(f"output {where}: {e.strerror}") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise InputError(f"output {where} exists and is not a regular file")
    for source in inputs:
        if source is not None and source.exists() and os.path.samefile(source, path):
            raise InputError(f"output {where} is also an input")


@payload.command("diff")
@click.argument("source", type=FILE)
@click.argument("target", type=FILE)
@click.argument("out", metavar="PAYLOAD", type=FILE)
@click.option(
    "--chunk-size",
    default=DEFAULT_CHUNK,
    show_default=True,
    type=click.IntRange(4096, MAX_CHUNK),
    help="Bytes of target per operation (4 KiB - 4 MiB).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, MAX_JOBS),
    help="Worker processes (default and at most: all cores, one per chunk).",
)
@click.option(
    "--effort",
    type=click.Choice(EFFORTS),
    default="best",
    show_default=True,
    help="best: xz, smallest payloads; fast: zstd, quicker to make.",
)
@click.option("--full", is_flag=True, help="Ignore SOURCE: make a full-image payload.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def payload_diff(
    source: Path,
    target: Path,
    out: Path,
    chunk_size: int,
    jobs: int | None,
    effort: str,
    full: bool,
    quiet: bool,
) -> None:
    """Make PAYLOAD, which turns SOURCE into TARGET.

    \b
    Examples:
      ota payload diff v1.img v2.img v1-to-v2.payload
      ota payload diff --full - v2.img v2.payload      # full image, no source
    """
    _check_input(target, "target")
    if not full:
        _check_input(source, "source")
    _check_output(out, target, None if full else source)
    size = target.stat().st_size
    with progress(size, f"diff {target.name}", enabled=not quiet) as advance, atomic_file(out) as f:
        try:
            stats = generate(
                target,
                f,
                None if full else source,
                chunk_size=chunk_size,
                jobs=jobs,
                effort=effort,
                progress=advance,
            )
        except ValueError as e:
            raise InputError(str(e)) from None
    ratio = stats.payload_size / size if size else 0.0
    click.echo(
        f"{out}: {stats.payload_size} bytes ({ratio:.1%} of the target), "
        + ", ".join(f"{n} {k}" for k, n in sorted(stats.ops.items())),
        err=True,
    )


@payload.command("apply")
@click.argument("payload_path", metavar="PAYLOAD", type=FILE)
@click.argument("output", type=FILE)
@click.option("--source", type=FILE, help="The image a delta applies to.")
def payload_apply(payload_path: Path, output: Path, source: Path | None) -> None:
    """Build OUTPUT from PAYLOAD (and --source for a delta). Prints nothing on success.

    OUTPUT appears only once every byte has been checked.

    \b
    Example:
      ota payload apply v1-to-v2.payload v2.img --source v1.img
    """
    _check_input(payload_path, "payload")
    if source is not None:
        _check_input(source, "source")
    _check_output(output, payload_path, source)

    try:
        with (
            atomic_file(output) as f,
            open(payload_path, "rb") as p,
            open(source, "rb") if source else nullcontext() as s,
        ):
            apply_payload(p, f, s)
    except PayloadError as e:
        raise InputError(f"{payload_path}: {e}") from None


@payload.command("info")
@click.argument("payload_path", metavar="PAYLOAD", type=FILE)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def payload_info(payload_path: Path, as_json: bool) -> None:
    """Show a payload's header, operation counts by type and data sizes.

    \b
    Example:
      ota payload info v1-to-v2.payload --json
    """
    _check_input(payload_path, "payload")
    counts: dict[str, dict[str, int]] = {}
    try:
        with open(payload_path, "rb") as f:
            header = read_header(f)
            offset = 0
            for index in range(header.op_count):
                record = f.read(OP.size)
                op = parse_op(record, header, offset)
                entry = counts.setdefault(
                    op.type.name, {"ops": 0, "bytes_written": 0, "data_bytes": 0}
                )
                entry["ops"] += 1
                entry["bytes_written"] += op.dst_length
                entry["data_bytes"] += op.data_length
                offset += op.dst_length
                f.seek(op.data_length, os.SEEK_CUR)
                if index == header.op_count - 1 and f.tell() > payload_path.stat().st_size:
                    raise PayloadError("truncated payload")
    except PayloadError as e:
        raise InputError(f"{payload_path}: {e}") from None
    info = {
        "format_version": header.version,
        "kind": "delta" if header.is_delta else "full",
        "payload_size": payload_path.stat().st_size,
        "target_size": header.target_size,
        "target_sha256": header.target_sha256.hex(),
        "source_size": header.source_size,
        "source_sha256": header.source_sha256.hex() if header.is_delta else None,
        "chunk_size": header.chunk_size,
        "operations": counts,
    }
    if as_json:
        echo_json(info)
        return
    for key in (
        "format_version",
        "kind",
        "payload_size",
        "target_size",
        "target_sha256",
        "source_size",
        "source_sha256",
        "chunk_size",
    ):
        if info[key] is not None:
            click.echo(f"{key:15} {info[key]}")
    echo_table(
        ["OPERATION", "COUNT", "WRITES", "DATA"],
        [[k, v["ops"], v["bytes_written"], v["data_bytes"]] for k, v in sorted(counts.items())],
    )
