"""An in-process transport serving a real published repository, for the agent's fast tier.

It has the contract of ``HttpTransport`` (the ``Transport`` protocol): consistent-snapshot
paths under ``<server>/repo/``, 404 for what does not exist, ranges with an ``ETag``
validator, the events endpoint storing each report id once. The repository itself is the
real one, made by ``ota release publish``; only the sockets are missing. Faults are injected
through ``cut_after`` (a download stops after so many bytes, once) and ``probe_status``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ota_client.errors import HttpStatusError, TransportError
from ota_client.fetch.transport import Checkpoint, EndlessDataError, Sink

SERVER = "https://ota.invalid"
CHUNK = 8 << 10


@dataclass
class RepoTransport:
    repo: Path  # the repo/ folder of a server home
    checkpoint_bytes: int = 128 << 10
    cut_after: int | None = None  # the next download stops after this many bytes
    probe_status: int = 200
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: int = 0
    downloaded: int = 0  # bytes of targets sent

    def _file(self, url: str) -> Path:
        prefix = f"{SERVER}/repo/"
        if not url.startswith(prefix):
            raise HttpStatusError(f"{url}: HTTP 404", 404)
        path = self.repo / url.removeprefix(prefix)
        if ".." in path.parts or not path.is_file():
            raise HttpStatusError(f"{url}: HTTP 404", 404)
        return path

    def get(self, url: str, *, max_length: int) -> bytes:
        data = self._file(url).read_bytes()
        if len(data) > max_length:
            raise EndlessDataError(f"{url}: longer than the allowed {max_length} bytes")
        return data

    def revalidate(
        self, url: str, *, max_length: int, etag: str | None
    ) -> tuple[bytes | None, str | None]:
        return self.get(url, max_length=max_length), None

    def download(
        self,
        url: str,
        sink: Sink,
        *,
        start: int,
        length: int,
        etag: str | None,
        checkpoint: Checkpoint,
    ) -> int:
        data = self._file(url).read_bytes()
        validator = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if start and etag != validator:
            sink.restart()
            start = 0
        position, last = start, start
        try:
            while position < len(data):
                if self.cut_after is not None and position - start >= self.cut_after:
                    self.cut_after = None
                    raise TransportError(f"{url}: the connection was cut")
                chunk = data[position : position + CHUNK]
                if position + len(chunk) > length:
                    raise EndlessDataError(f"{url}: more than the signed {length} bytes")
                sink.write(chunk)
                position += len(chunk)
                self.downloaded += len(chunk)
                if position - last >= self.checkpoint_bytes:
                    sink.sync()
                    checkpoint(position, validator)
                    last = position
        finally:
            if position != last:
                sink.sync()
                checkpoint(position, validator)
        return position

    def post_json(self, url: str, body: bytes) -> int:
        self.posts += 1
        report = json.loads(body)
        self.reports.setdefault(report["id"], report)
        return 202

    def probe(self, url: str, *, timeout: float) -> int:
        return self.probe_status

    def close(self) -> None:
        pass

    def events(self) -> list[str]:
        return [(r["ecu"], r["event"]) for r in self.reports.values()]  # type: ignore[misc]
