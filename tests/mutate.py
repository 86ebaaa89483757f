"""Hostile inputs made by mutating valid ones, for fault campaigns (fixed seeds, no I/O).

Hand-listed bad inputs find the bugs someone already thought of. These generators start from a
valid file and break it the ways disks, careless integrators and attackers do: bytes
(truncation, bit flips, deletions, insertions, garbage splices), structure (every leaf of a
parsed document swapped for a value of another type, a NaN, a huge number, a NUL string, deep
nesting; keys deleted or added) and text shapes the standard parsers handle badly (deep nesting,
long dotted keys, huge integers, long lines). ``toml_dumps`` writes documents back as TOML.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections.abc import Iterator
from typing import Any

Path_ = tuple[str | int, ...]

HOSTILE_VALUES: list[Any] = [
    True,
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64 + 1,
    10**40,
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "\0",
    "a\0b",
    "x" * 5000,
    "../../../../etc/passwd",
    "/dev/zero",
    "é\u202e\ufeff",
    "-",
    [],
    [1, "a"],
    {},
    {"k": "v"},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]
JSON_ONLY = [None]


def leaf_paths(doc: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path to a value in ``doc`` (tables and lists included), outermost first."""
    if prefix:
        yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from leaf_paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from leaf_paths(value, (*prefix, i))


def _set(doc: Any, path: Path_, value: Any) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _delete(doc: Any, path: Path_) -> Any:
    out = copy.deepcopy(doc)
    node = out
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return out


def structural(doc: Any, *, json_values: bool = False) -> Iterator[tuple[str, Any]]:
    """(label, document): each value swapped for each hostile value, deleted, or given an
    unknown neighbour; plus an unknown top-level key and a wrong top-level type."""
    values = HOSTILE_VALUES + (JSON_ONLY if json_values else [])
    for path in leaf_paths(doc):
        where = ".".join(map(str, path))
        for i, value in enumerate(values):
            yield f"{where}={i}", _set(doc, path, value)
        yield f"del {where}", _delete(doc, path)
        if isinstance(path[-1], str):
            parent = path[:-1]
            yield f"extra {where}", _set(doc, (*parent, "zz_unknown"), 1)
    if isinstance(doc, dict):
        yield "extra top", {**doc, "zz_unknown": {"a": 1}}
    yield "list top", [doc]


def byte_level(data: bytes, rnd: random.Random, count: int) -> Iterator[tuple[str, bytes]]:
    """(label, bytes): truncations (including to nothing), bit flips, deletions, insertions,
    a zeroed range and garbage splices, at ``count`` random places."""
    n = len(data)
    yield "empty", b""
    yield "one byte", data[:1]
    yield "minus one", data[:-1]
    yield "NUL appended", data + b"\0"
    yield "BOM", b"\xef\xbb\xbf" + data
    yield "latin-1 byte", data + b"\xff"
    for i in range(count):
        at = rnd.randrange(max(n, 1))
        kind = i % 6
        if kind == 0:
            yield f"truncate@{at}", data[:at]
        elif kind == 1:
            bit = 1 << rnd.randrange(8)
            yield f"flip@{at}", data[:at] + bytes([data[at] ^ bit]) + data[at + 1 :] if n else b"\1"
        elif kind == 2:
            yield f"delete@{at}", data[:at] + data[at + rnd.randrange(1, 16) :]
        elif kind == 3:
            yield f"insert@{at}", data[:at] + rnd.randbytes(rnd.randrange(1, 16)) + data[at:]
        elif kind == 4:
            size = rnd.randrange(1, 64)
            yield f"zero@{at}", data[:at] + bytes(size) + data[at + size :]
        else:
            token = rnd.choice([b'"', b"[", b"{", b"}", b"]", b"=", b"\n", b".", b"\\", b"'"])
            yield f"splice@{at}", data[:at] + token * rnd.randrange(1, 4) + data[at:]


def toml_shapes() -> Iterator[tuple[str, str]]:
    """Text that is valid-looking TOML but hostile to parsers."""
    yield "deep arrays", "x = " + "[" * 3000 + "]" * 3000
    yield "deep tables", "x = " + "{a = " * 600 + "1" + "}" * 600
    yield "33 deep", "x = " + "[" * 33 + "]" * 33
    yield "huge integer", "x = " + "9" * 4301
    yield "long dotted key", ".".join(["k"] * 20000) + " = 1"
    yield "dotted table", "[" + ".".join(["k"] * 40) + "]"
    yield "long word", "x = " + "a" * 200_000
    yield "long string", 'x = "' + "a" * 200_000 + '"'
    yield "many keys", "".join(f"k{i} = {i}\n" for i in range(20000))
    yield "nan", "x = nan"
    yield "inf", "x = -inf"
    yield "NUL escape", 'x = "\\u0000"'
    yield "raw NUL", "x = 1\0"
    yield "CR", "x = 1\r"
    yield "unterminated", 'x = """' + "a" * 1000


def json_shapes() -> Iterator[tuple[str, bytes]]:
    """JSON text hostile to parsers or to code that trusts parsed types."""
    yield "deep arrays", b"[" * 100_000 + b"]" * 100_000
    yield "deep objects", b'{"a":' * 5000 + b"1" + b"}" * 5000
    yield "33 deep", b"[" * 33 + b"]" * 33
    yield "huge integer", b"9" * 5000
    yield "NaN", b"NaN"
    yield "Infinity", b'{"a": Infinity}'
    yield "lone surrogate", b'"\\ud800"'
    yield "not utf-8", b'{"a": "\xff"}'
    yield "number", b"1"
    yield "null", b"null"
    yield "string", b'"x"'
    yield "empty", b""
    yield "whitespace", b"   "
    yield "duplicate keys", b'{"a": 1, "a": 2}'


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"TOML has no {type(value).__name__}")


def toml_dumps(doc: dict[str, Any]) -> str:
    """``doc`` as TOML (top-level keys, every nested value inline)."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items())
