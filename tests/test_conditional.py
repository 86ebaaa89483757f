"""Range and conditional request decisions (pure), checked against a simple model."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from ota_server.http.conditional import parse_range, plan_reply

ETAG = "abc123"


def test_plain_get() -> None:
    r = plan_reply({}, size=100, etag=ETAG, mtime=0)
    assert (r.status, r.start, r.length) == (200, 0, 100)
    assert r.headers["ETag"] == '"abc123"' and r.headers["Accept-Ranges"] == "bytes"


def test_ranges() -> None:
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 10)
    assert parse_range("bytes=-10", 100) == (90, 10)
    assert parse_range("bytes=-1000", 100) == (0, 100)
    assert parse_range("bytes=50-1000", 100) == (50, 50)
    assert parse_range("bytes=100-", 100) == "unsatisfiable"
    assert parse_range("bytes=-0", 100) == "unsatisfiable"
    assert parse_range("bytes=-5", 0) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    for ignored in ("bytes=5-1", "bytes=0-1,5-6", "items=0-1", "bytes=-", "bytes=a-b", ""):
        assert parse_range(ignored, 100) is None


def test_416_carries_the_size() -> None:
    r = plan_reply({"Range": "bytes=200-"}, size=100, etag=ETAG, mtime=0)
    assert r.status == 416 and r.headers["Content-Range"] == "bytes */100"


def test_if_none_match() -> None:
    for value in ('"abc123"', 'W/"abc123"', '"x", "abc123"', "*"):
        assert plan_reply({"If-None-Match": value}, size=1, etag=ETAG, mtime=0).status == 304
    assert plan_reply({"If-None-Match": '"other"'}, size=1, etag=ETAG, mtime=0).status == 200


def test_if_range_resumes_only_the_same_content() -> None:
    same = plan_reply({"Range": "bytes=10-", "If-Range": '"abc123"'}, size=100, etag=ETAG, mtime=0)
    assert (same.status, same.start, same.length) == (206, 10, 90)
    assert same.headers["Content-Range"] == "bytes 10-99/100"
    for stale in ('"old"', 'W/"abc123"', "Mon, 01 Jan 2001 00:00:00 GMT", "garbage"):
        r = plan_reply({"Range": "bytes=10-", "If-Range": stale}, size=100, etag=ETAG, mtime=5)
        assert (r.status, r.length) == (200, 100), stale
    dated = plan_reply(
        {"Range": "bytes=10-", "If-Range": "Thu, 01 Jan 1970 00:00:05 GMT"},
        size=100,
        etag=ETAG,
        mtime=5,
    )
    assert dated.status == 206


@example(size=0, first=None, last=5)
@given(
    size=st.integers(0, 10_000),
    first=st.integers(0, 20_000) | st.none(),
    last=st.integers(0, 20_000) | st.none(),
)
def test_any_range_reply_stays_inside_the_file(
    size: int, first: int | None, last: int | None
) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    r = plan_reply({"Range": header}, size=size, etag=ETAG, mtime=0)
    if r.status == 206:
        assert r.start >= 0 and r.length >= 1 and r.start + r.length <= size
        # model: explicit first-last, or suffix
        if first is not None:
            assert r.start == first
            assert r.length == (min(last, size - 1) if last is not None else size - 1) - first + 1
        else:
            assert last is not None and r.length == min(last, size)
    elif r.status == 416:
        assert (first is not None and first >= size) or (first is None and (last == 0 or size == 0))
    else:
        assert r.status == 200 and r.length == size
