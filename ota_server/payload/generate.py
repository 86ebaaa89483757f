"""Generate a payload: chunk the target, pick the smallest operation per chunk, in parallel.

Per chunk, cheapest first: ``ZERO`` if it is all zeros; ``SOURCE_COPY`` if the source holds it
byte for byte at an offset the matcher proposes; otherwise the smaller of ``SOURCE_BSDIFF``
and ``REPLACE``. The bsdiff patch comes from the aligned shortcut when the chunk is a few
shifted source blocks with little changed, else from the bsdiff search (``search.py``) over
the source window the matcher chose. ``effort="best"`` compresses with xz (trying the x86
filter on code), ``"fast"`` with zstd. Chunks run in worker processes (all cores by default)
and are written in order as they complete, so memory is O(jobs × window), not O(image);
there are never more workers than cores or chunks (``workers``).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ota_client.payload import bsdiff_data
from ota_client.payload.format import MAX_OP_LENGTH, Header, Op, OpType
from ota_server.config import MAX_JOBS
from ota_server.payload.aligned import aligned_patch
from ota_server.payload.compress import smallest
from ota_server.payload.match import ChunkPlan, SourceIndex, anchors, plan_chunks
from ota_server.payload.search import bsdiff

DEFAULT_CHUNK = 2 << 20
MAX_CHUNK = 4 << 20
WINDOW_PAD = 256 << 10
REPLACE_WORTH_TRYING = 0.25  # also try REPLACE when the delta is above this share of the chunk
EFFORTS = ("best", "fast")

Progress = Callable[[int], None]
View = mmap.mmap | bytes


@dataclass
class PayloadStats:
    target_size: int
    payload_size: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    data_bytes: Counter[str] = field(default_factory=Counter)  # encoded data by op type


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def encode_chunk(
    target: View, source: View | None, plan: ChunkPlan, effort: str
) -> tuple[Op, bytes]:
    """The smallest operation (and its data) that writes ``target[plan.start:plan.end]``."""
    chunk = bytes(target[plan.start : plan.end])
    length = len(chunk)
    digest = _sha(chunk)
    if chunk.count(0) == length:
        return Op(OpType.ZERO, plan.start, length, digest), b""
    best: tuple[Op, bytes] | None = None
    if source is not None:
        for offset in plan.copies:
            if source[offset : offset + length] == chunk:
                op = Op(
                    OpType.SOURCE_COPY,
                    plan.start,
                    length,
                    digest,
                    src_offset=offset,
                    src_length=length,
                    src_sha256=digest,
                )
                return op, b""
        if plan.window is not None:
            best = _bsdiff_op(chunk, digest, source, plan, effort)
    if best is None or len(best[1]) > REPLACE_WORTH_TRYING * length:
        codec, data = smallest(chunk, effort=effort, code=True)
        if best is None or len(data) < len(best[1]):
            best = (Op(OpType.REPLACE, plan.start, length, digest, codec, len(data)), data)
    return best


def _bsdiff_op(
    chunk: bytes, digest: bytes, source: View, plan: ChunkPlan, effort: str
) -> tuple[Op, bytes] | None:
    assert plan.window is not None
    shortcut = aligned_patch(
        np.frombuffer(chunk, np.uint8),
        np.frombuffer(source, np.uint8),
        plan.start,
        [offset - plan.start for offset in plan.copies],
    )
    if shortcut is not None:
        (w0, w1), triples, diff = shortcut
        extra = b""
    else:
        w0, w1 = plan.window
        triples, diff, extra = bsdiff(bytes(source[w0:w1]), chunk)
    if len(triples) > bsdiff_data.max_triples(len(chunk)):
        return None  # the applier refuses such patches: REPLACE instead
    encoded = bsdiff_data.encode(triples, diff, extra)
    if len(encoded) > bsdiff_data.max_decoded(len(chunk)):
        return None
    codec, packed = smallest(encoded, effort=effort)
    data = bsdiff_data.pack(packed, len(encoded))
    op = Op(
        OpType.SOURCE_BSDIFF,
        plan.start,
        len(chunk),
        digest,
        codec,
        len(data),
        w0,
        w1 - w0,
        _sha(bytes(source[w0:w1])),
    )
    return op, data


# -- worker processes ---------------------------------------------------------------------------

_views: dict[str, View] = {}  # this worker's read-only maps of the two images


def _map(path: Path, stack: ExitStack) -> View:
    f = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by the stack
    if os.fstat(f.fileno()).st_size == 0:
        return b""
    view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    stack.callback(_unmap, view)
    return view


def _unmap(view: mmap.mmap) -> None:
    with contextlib.suppress(BufferError):  # an exception in flight holds a numpy view
        view.close()  # ... and the OS unmaps it at exit


def _worker_init(target: Path, source: Path | None) -> None:
    stack = ExitStack()  # lives as long as the worker process
    _views["target"] = _map(target, stack)
    if source is not None:
        _views["source"] = _map(source, stack)


def _worker_encode(args: tuple[ChunkPlan, str]) -> tuple[Op, bytes]:
    plan, effort = args
    return encode_chunk(_views["target"], _views.get("source"), plan, effort)


# -- orchestration ------------------------------------------------------------------------------


def _plans(target: View, source: View | None, chunk_size: int) -> list[ChunkPlan]:
    if source is None:
        return [
            ChunkPlan(s, min(s + chunk_size, len(target)), None, ())
            for s in range(0, len(target), chunk_size)
        ]
    index = SourceIndex.build(np.frombuffer(source, np.uint8))
    matches = index.match(*anchors(np.frombuffer(target, np.uint8)))
    return plan_chunks(len(target), len(source), chunk_size, matches, WINDOW_PAD)


def generate(
    target: Path,
    out: BinaryIO,
    source: Path | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    jobs: int | None = None,
    effort: str = "best",
    progress: Progress | None = None,
) -> PayloadStats:
    """Write a payload that builds ``target`` (from ``source``, if given) to ``out``.

    An empty source is no source: the payload is then a full-image payload.
    """
    if not 4096 <= chunk_size <= min(MAX_CHUNK, MAX_OP_LENGTH):
        raise ValueError(f"chunk size must be between 4 KiB and {MAX_CHUNK >> 20} MiB")
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(EFFORTS)}")
    if jobs is not None and not 1 <= jobs <= MAX_JOBS:
        raise ValueError(f"jobs must be between 1 and {MAX_JOBS}")
    with ExitStack() as stack:
        tview = _map(target, stack)
        sview = _map(source, stack) if source is not None else None
        if sview is not None and len(sview) == 0:
            sview, source = None, None
        header = Header(
            chunk_size=chunk_size,
            op_count=-(-len(tview) // chunk_size),
            target_size=len(tview),
            target_sha256=_sha(tview),  # type: ignore[arg-type]
            source_size=0 if sview is None else len(sview),
            source_sha256=bytes(32) if sview is None else _sha(sview),  # type: ignore[arg-type]
        )
        stats = PayloadStats(len(tview), payload_size=len(header.encode()))
        out.write(header.encode())
        plans = _plans(tview, sview, chunk_size)
        for op, data in _run(plans, effort, jobs, target, source, tview, sview):
            record = op.encode()
            out.write(record)
            out.write(data)
            stats.ops[op.type.name] += 1
            stats.data_bytes[op.type.name] += len(data)
            stats.payload_size += len(record) + len(data)
            if progress is not None:
                progress(op.dst_length)
    return stats


def workers(jobs: int | None, chunks: int) -> int:
    """Worker processes for ``chunks`` chunks: as asked (default all cores), but never more
    than the cores of this machine, the chunks to encode, or ``MAX_JOBS``."""
    cores = os.cpu_count() or 1
    return max(1, min(jobs or cores, cores, chunks, MAX_JOBS))


def _run(
    plans: list[ChunkPlan],
    effort: str,
    jobs: int | None,
    target: Path,
    source: Path | None,
    tview: View,
    sview: View | None,
) -> Iterator[tuple[Op, bytes]]:
    jobs = workers(jobs, len(plans))
    if jobs == 1:
        for plan in plans:
            yield encode_chunk(tview, sview, plan, effort)
        return
    with ProcessPoolExecutor(jobs, initializer=_worker_init, initargs=(target, source)) as pool:
        yield from pool.map(_worker_encode, [(plan, effort) for plan in plans])
