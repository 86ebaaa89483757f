"""The payload format: round trips, hostile and corrupted payloads, wrong sources, memory."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ota_client.payload.apply import apply_payload
from ota_client.payload.format import (
    HEADER,
    OP,
    Header,
    Op,
    OpType,
    PayloadError,
    PayloadFormatError,
    SourceMismatchError,
    parse_header,
    parse_op,
)
from ota_server.payload.generate import generate
from tests.helpers import one_line_error, ota

CHUNK = 4096


def make(tmp: Path, target: bytes, source: bytes | None, **kw: object) -> bytes:
    (tmp / "t").write_bytes(target)
    src = None
    if source is not None:
        (tmp / "s").write_bytes(source)
        src = tmp / "s"
    out = io.BytesIO()
    generate(
        tmp / "t", out, src, chunk_size=kw.pop("chunk_size", CHUNK), jobs=kw.pop("jobs", 1), **kw
    )  # type: ignore[arg-type]
    return out.getvalue()


def apply(payload: bytes, source: bytes | None) -> bytes:
    out = io.BytesIO()
    apply_payload(io.BytesIO(payload), out, None if source is None else io.BytesIO(source))
    return out.getvalue()


def edited(rng: random.Random, source: bytes) -> bytes:
    """A plausible next release: patched bytes, an insertion, a deletion, a moved block."""
    data = bytearray(source)
    for _ in range(rng.randrange(4)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.randrange(300))
    if len(data) > 100:
        a = rng.randrange(len(data) - 50)
        del data[a : a + rng.randrange(50)]
    if len(data) > 2000:
        a = rng.randrange(len(data) - 1000)
        block = data[a : a + 1000]
        del data[a : a + 1000]
        b = rng.randrange(len(data))
        data[b:b] = block
    return bytes(data)


def code_like(rng: random.Random, size: int) -> bytes:
    words = [rng.randbytes(4) for _ in range(32)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) if rng.random() < 0.9 else bytes(rng.randrange(64))
    return bytes(out[:size])


SIZES = st.sampled_from([0, 1, 17, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 123, 40_000])
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(size=SIZES, seed=st.integers(0, 2**32), effort=st.sampled_from(["best", "fast"]))
def test_round_trip_structured(
    tmp_path_factory: pytest.TempPathFactory, size: int, seed: int, effort: str
) -> None:
    rng = random.Random(seed)
    source = code_like(rng, size)
    target = edited(rng, source)
    payload = make(tmp_path_factory.mktemp("p"), target, source, effort=effort)
    assert apply(payload, source) == target


@FAST
@given(source=st.binary(max_size=3 * CHUNK), target=st.binary(max_size=3 * CHUNK))
def test_round_trip_random(
    tmp_path_factory: pytest.TempPathFactory, source: bytes, target: bytes
) -> None:
    tmp = tmp_path_factory.mktemp("p")
    assert apply(make(tmp, target, source, effort="fast"), source) == target
    assert apply(make(tmp, target, None, effort="fast"), None) == target


def test_ops_are_chosen_by_content(tmp_path: Path) -> None:
    rng = random.Random(7)
    source = code_like(rng, 16 * CHUNK)
    target = (
        source[: 4 * CHUNK]  # copied
        + bytes(2 * CHUNK)  # zeros
        + source[8 * CHUNK : 12 * CHUNK]  # moved: copied from elsewhere
        + edited(rng, source[12 * CHUNK :])  # changed a little: bsdiff
        + rng.randbytes(2 * CHUNK)
    )  # new: replace
    payload = make(tmp_path, target, source)
    assert apply(payload, source) == target
    kinds = set()
    stream = io.BytesIO(payload)
    header = parse_header(stream.read(HEADER.size))
    offset = 0
    for _ in range(header.op_count):
        op = parse_op(stream.read(OP.size), header, offset)
        stream.seek(op.data_length, os.SEEK_CUR)
        offset += op.dst_length
        kinds.add(op.type)
    assert kinds == {OpType.SOURCE_COPY, OpType.ZERO, OpType.SOURCE_BSDIFF, OpType.REPLACE}
    assert len(payload) < len(target) // 2


def test_parallel_generation_matches(tmp_path: Path) -> None:
    rng = random.Random(3)
    source = code_like(rng, 40 * CHUNK)
    target = edited(rng, source)
    one = make(tmp_path, target, source, jobs=1)
    two = make(tmp_path, target, source, jobs=2)
    assert one == two  # deterministic, whatever the number of workers
    assert apply(two, source) == target


# -- wrong sources --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delta(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, bytes]:
    tmp_path = tmp_path_factory.mktemp("delta")
    rng = random.Random(11)
    source = code_like(rng, 10 * CHUNK)
    target = edited(rng, source)
    return make(tmp_path, target, source), source, target


def test_wrong_source(delta: tuple[bytes, bytes, bytes]) -> None:
    payload, source, _ = delta
    with pytest.raises(SourceMismatchError, match="needs a source"):
        apply(payload, None)
    with pytest.raises(SourceMismatchError, match="bytes"):
        apply(payload, source[:-1])
    rotted = bytearray(source)
    rotted[len(source) // 2] ^= 1
    with pytest.raises(SourceMismatchError, match="differ"):
        apply(payload, bytes(rotted))


# -- hostile and corrupted payloads -----------------------------------------------------------


def test_every_truncation_fails(delta: tuple[bytes, bytes, bytes]) -> None:
    payload, source, _ = delta
    for cut in sorted({*range(0, HEADER.size + OP.size + 8), *range(0, len(payload), 97)}):
        with pytest.raises(PayloadFormatError):
            apply(payload[:cut], source)
    with pytest.raises(PayloadFormatError, match="after the last"):
        apply(payload + b"x", source)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corruption_is_detected(delta: tuple[bytes, bytes, bytes], data: st.DataObject) -> None:
    payload, source, target = delta
    position = data.draw(st.integers(0, len(payload) - 1))
    value = data.draw(st.integers(1, 255))
    broken = bytearray(payload)
    broken[position] ^= value
    try:
        out = apply(bytes(broken), source)
    except PayloadError:
        return
    assert out == target  # only a change that does not matter may pass


@settings(max_examples=500)
@given(st.binary(min_size=HEADER.size, max_size=HEADER.size))
def test_header_parser_never_crashes(raw: bytes) -> None:
    try:
        parse_header(b"OTAPAYLD" + raw[8:])
    except PayloadFormatError:
        pass


@settings(max_examples=500)
@given(st.binary(min_size=OP.size, max_size=OP.size), st.integers(0, 1 << 20))
def test_op_parser_never_crashes(raw: bytes, offset: int) -> None:
    header = Header(CHUNK, 10, 10 * CHUNK, bytes(32), 5 * CHUNK, b"\1" * 32)
    try:
        op = parse_op(raw, header, offset)
    except PayloadFormatError:
        return
    assert op.dst_offset == offset and op.dst_offset + op.dst_length <= header.target_size
    assert op.src_offset + op.src_length <= header.source_size


def _payload(header: Header, *ops: tuple[Op, bytes]) -> bytes:
    return header.encode() + b"".join(op.encode() + data for op, data in ops)


def test_absurd_and_future_headers() -> None:
    good = Header(CHUNK, 1, 100, hashlib.sha256(bytes(100)).digest())
    assert apply(
        _payload(good, (Op(OpType.ZERO, 0, 100, hashlib.sha256(bytes(100)).digest()), b"")), None
    ) == bytes(100)
    cases = {
        "newer than this client": Header(CHUNK, 1, 100, bytes(32), version=2),
        "absurd": Header(CHUNK, 1, 1 << 50, bytes(32)),
        "cannot cover": Header(CHUNK, 5, 3, bytes(32)),
        "chunk size": Header(1 << 30, 1, 100, bytes(32)),
        "disagree": Header(CHUNK, 1, 100, bytes(32), source_size=5),
    }
    for message, header in cases.items():
        with pytest.raises(PayloadFormatError, match=message):
            apply(header.encode(), None)
    with pytest.raises(PayloadFormatError, match="bad magic"):
        apply(b"NOTAPAYL" + good.encode()[8:], None)


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Op(OpType.ZERO, 10, 10, bytes(32)), "expected 0"),
        (Op(OpType.ZERO, 0, 200, bytes(32)), "past the end"),
        (Op(OpType.ZERO, 0, CHUNK + 1, bytes(32)), "out of range"),
        (Op(OpType.REPLACE, 0, 100, bytes(32), data_length=1 << 31), "out of range"),
        (Op(OpType.SOURCE_COPY, 0, 100, bytes(32), src_length=100), "cannot read a source"),
        (Op(OpType.ZERO, 0, 100, bytes(32), data_length=5), "carries no data"),
        (Op(OpType.REPLACE, 0, 100, bytes(32), data_length=99), "as long as it writes"),
    ],
)
def test_hostile_operations(op: Op, message: str) -> None:
    header = Header(CHUNK, 1, 100, bytes(32))
    with pytest.raises(PayloadFormatError, match=message):
        apply(_payload(header, (op, b"")), None)


def test_reads_outside_the_source_are_refused() -> None:
    header = Header(CHUNK, 1, 100, bytes(32), source_size=50, source_sha256=b"\1" * 32)
    op = Op(OpType.SOURCE_COPY, 0, 100, bytes(32), src_offset=0, src_length=100)
    with pytest.raises(PayloadFormatError, match="outside the source"):
        apply(_payload(header, (op, b"")), bytes(50))


def test_memory_is_bounded_by_the_chunk_not_the_image(tmp_path: Path) -> None:
    rng = random.Random(5)
    chunk = 1 << 20
    source = rng.randbytes(4 * chunk) * 8  # 32 MiB
    target = bytearray(source)
    for i in range(0, len(target), 3 * chunk):
        target[i + 100 : i + 200] = rng.randbytes(100)  # every third chunk needs a patch
    (tmp_path / "s").write_bytes(source)
    (tmp_path / "t").write_bytes(target)
    with open(tmp_path / "p", "wb") as out:
        generate(tmp_path / "t", out, tmp_path / "s", chunk_size=chunk, jobs=2)
    sink = tmp_path / "out"
    tracemalloc.start()
    with open(tmp_path / "p", "rb") as p, open(tmp_path / "s", "rb") as s, open(sink, "wb") as o:
        apply_payload(p, o, s)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sink.read_bytes() == bytes(target)
    assert peak < 12 * chunk, f"peak {peak} bytes for a {len(target)}-byte image"


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_round_trip_and_errors(tmp_path: Path) -> None:
    rng = random.Random(9)
    old, new = tmp_path / "old.img", tmp_path / "new.img"
    old.write_bytes(code_like(rng, 300_000))
    new.write_bytes(edited(rng, old.read_bytes()))
    home = tmp_path / "home"
    assert ota(home, "payload", "diff", "-q", old, new, tmp_path / "d.payload").exit_code == 0
    result = ota(
        home, "payload", "apply", tmp_path / "d.payload", tmp_path / "out.img", "--source", old
    )
    assert result.exit_code == 0 and result.stdout == ""
    assert (tmp_path / "out.img").read_bytes() == new.read_bytes()
    info = ota(home, "payload", "info", "--json", tmp_path / "d.payload")
    assert '"kind": "delta"' in info.stdout
    # A wrong source, a truncated payload, garbage: one line, and no output file appears.
    assert "delta was made from" in one_line_error(
        ota(home, "payload", "apply", tmp_path / "d.payload", tmp_path / "x.img", "--source", new)
    )
    (tmp_path / "cut.payload").write_bytes((tmp_path / "d.payload").read_bytes()[:-10])
    assert "truncated" in one_line_error(
        ota(home, "payload", "apply", tmp_path / "cut.payload", tmp_path / "x.img", "--source", old)
    )
    (tmp_path / "junk").write_bytes(b"\0" * 500)
    assert "bad magic" in one_line_error(ota(home, "payload", "info", tmp_path / "junk"))
    assert not list(tmp_path.glob("x.img*"))
    # A full-image payload needs no source.
    assert (
        ota(home, "payload", "diff", "-q", "--full", "-", new, tmp_path / "f.payload").exit_code
        == 0
    )
    assert ota(home, "payload", "apply", tmp_path / "f.payload", tmp_path / "f.img").exit_code == 0
    assert (tmp_path / "f.img").read_bytes() == new.read_bytes()
    assert "--chunk-size" in one_line_error(
        ota(home, "payload", "diff", "--chunk-size", "100000000", old, new, tmp_path / "z")
    )
