"""python-tuf's fetcher over the vehicle's one transport.

python-tuf asks for metadata with ``download_bytes(url, max_length)``; the cap goes to the
transport, so an oversized answer is refused as it arrives (endless data: a security failure,
not a retry), and python-tuf sees the HTTP status it needs (it ends every root lookup at 404).

A poll is one ``timestamp.json``: it is asked for with ``If-None-Match`` and the ETag of the
copy python-tuf already trusts (kept in ``timestamp.etag`` beside it), and a 304 hands
python-tuf that very copy — which it then judges as always (an expired one is refused), so
an unchanged poll costs a few hundred bytes and trusts nothing new.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from ota_client.atomic import write_atomic
from ota_client.errors import HttpStatusError, TransportError
from ota_client.fetch.transport import Transport
from ota_client.strict import FormatError, read_bounded

DEFAULT_CAP = 16 << 20
MAX_ETAG = 200


class TransportFetcher(FetcherInterface):
    def __init__(self, transport: Transport, metadata_dir: Path | None = None) -> None:
        self.transport = transport
        self.metadata_dir = metadata_dir

    def download_bytes(self, url: str, max_length: int) -> bytes:
        try:
            if self.metadata_dir is not None and url.endswith("/timestamp.json"):
                return self._timestamp(url, max_length, self.metadata_dir)
            return self.transport.get(url, max_length=max_length)
        except HttpStatusError as e:
            raise exceptions.DownloadHTTPError(str(e), e.status) from None
        except TransportError as e:
            raise exceptions.DownloadError(str(e)) from None

    def _fetch(self, url: str) -> Iterator[bytes]:
        yield self.download_bytes(url, DEFAULT_CAP)

    def _timestamp(self, url: str, max_length: int, folder: Path) -> bytes:
        """The ETag is kept with the digest of the body it names, and used only while that
        body is the copy python-tuf trusts (a body it refused never becomes "unchanged")."""
        trusted, tag_file = folder / "timestamp.json", folder / "timestamp.etag"
        etag = cached = None
        with contextlib.suppress(OSError, FormatError, UnicodeDecodeError, ValueError):
            cached = read_bounded(trusted, max_length, "timestamp.json")
            tag, digest = read_bounded(tag_file, MAX_ETAG + 80, "timestamp.etag").decode().split()
            if digest == hashlib.sha256(cached).hexdigest():
                etag = tag
        body, new_etag = self.transport.revalidate(url, max_length=max_length, etag=etag)
        if body is None:
            assert cached is not None
            return cached
        with contextlib.suppress(OSError):
            if (
                new_etag
                and len(new_etag) <= MAX_ETAG
                and new_etag.isprintable()
                and " " not in new_etag
            ):
                line = f"{new_etag} {hashlib.sha256(body).hexdigest()}"
                write_atomic(tag_file, line.encode())
            else:
                tag_file.unlink(missing_ok=True)
        return body
