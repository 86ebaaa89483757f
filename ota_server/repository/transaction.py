"""All-or-nothing changes to the repository directory, safe against crashes.

A change adds new files (hash-prefixed targets, versioned metadata) and replaces a few
(``timestamp.json``). ``commit`` first writes a journal naming every file it will create, a
backup of every file it will replace, and the *commit file*: the last write, after which the
change is visible to clients (``timestamp.json`` for a publish, the new ``N.root.json`` for a
rotation — a root that clients may have seen is never taken back). Then it performs the writes
in order and deletes the journal.

If anything fails part way, ``commit`` undoes what it did. If the process dies instead, the
next writer calls ``recover`` under the lock: a commit file with its new content means the
change landed (only the journal is removed); otherwise everything is undone. Either way the
repository ends exactly as before or exactly as after.

The journal is read like any other input (bounded, schema-checked) and every path in it must
lie inside the repository (files) or the journal's own backup folder (backups): a damaged or
planted journal cannot make recovery delete or overwrite anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ota_client.atomic import fsync_dir, write_atomic
from ota_client.strict import FormatError, Reader, load_json, printable, read_bounded
from ota_server.errors import RepositoryStateError

JOURNAL = "journal.json"
COMPLETED = "completed an interrupted change"
ROLLED_BACK = "rolled back an interrupted change"
MAX_JOURNAL_BYTES = 64 << 20
MAX_JOURNAL_FILES = 1 << 20
MAX_BACKUP_BYTES = 64 << 20  # a replaced file is metadata (timestamp.json)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class _Op:
    final: Path
    data: bytes | None = None  # metadata content, or None for a staged file
    staged: Path | None = None  # a fully written, fsync'd file to rename into place
    replace: bool = False  # may overwrite an existing file (backed up first)


def _sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


class Transaction:
    """Collect writes under ``root``, then commit them in order. Writes are staged in
    ``work_dir``."""

    def __init__(self, work_dir: Path, root: Path) -> None:
        self.work_dir = work_dir
        self.root = root
        self.staging = work_dir / "txn"
        self._ops: list[_Op] = []
        self._staged = 0

    def new_staging_file(self, name: str) -> Path:
        """A fresh path in the staging area (same file system) for a file to be added later."""
        self.staging.mkdir(parents=True, exist_ok=True)
        self._staged += 1
        return self.staging / f"{self._staged}.{name}"

    def add_file(self, final: Path, staged: Path) -> None:
        """Move ``staged`` to ``final`` at commit; content-addressed, so an existing one is kept."""
        self._ops.append(_Op(final, staged=staged))

    def write(self, final: Path, data: bytes, *, replace: bool = False) -> None:
        self._ops.append(_Op(final, data=data, replace=replace))

    def commit(self) -> None:
        if not self._ops:
            self._cleanup()
            return
        ops = [op for op in self._ops if not (op.staged and op.final.exists())]
        for op in ops:
            if not _inside(op.final, self.root):
                raise RepositoryStateError(f"refusing to write {op.final} outside {self.root}")
            if op.final.exists() and not op.replace:
                raise RepositoryStateError(f"refusing to overwrite {op.final}")
        created: list[str] = []
        replaced: list[dict[str, str]] = []
        backups = self.work_dir / "backup"
        backups.mkdir(parents=True, exist_ok=True)
        for i, op in enumerate(ops):
            if op.final.exists():
                backup = backups / f"{i}.{op.final.name}"
                shutil.copy2(op.final, backup)
                replaced.append({"path": str(op.final), "backup": str(backup)})
            else:
                created.append(str(op.final))
        last = ops[-1]
        if last.data is None:
            raise RepositoryStateError("a change must end with a metadata write")
        commit_sha = hashlib.sha256(last.data).hexdigest()
        journal = {
            "created": created,
            "replaced": replaced,
            "commit": {"path": str(last.final), "sha256": commit_sha},
        }
        fsync_dir(backups)
        write_atomic(self.work_dir / JOURNAL, json.dumps(journal, indent=1).encode())
        try:
            for op in ops:
                self._run_op(op)
        except BaseException:
            # Undo, unless the commit file already landed (e.g. only its directory fsync
            # failed): then clients may have seen it, and the change stands.
            if recover(self.work_dir, self.root) != COMPLETED:
                raise
        self._cleanup()

    def _run_op(self, op: _Op) -> None:
        op.final.parent.mkdir(parents=True, exist_ok=True)
        if op.staged is not None:
            os.replace(op.staged, op.final)
            fsync_dir(op.final.parent)
        else:
            assert op.data is not None
            write_atomic(op.final, op.data)

    def abort(self) -> None:
        """Drop what was staged. A journal left by a commit that could not be undone stays,
        for ``recover`` under the next lock."""
        self._ops.clear()
        if not (self.work_dir / JOURNAL).exists():
            self._cleanup()

    def _cleanup(self) -> None:
        (self.work_dir / JOURNAL).unlink(missing_ok=True)
        shutil.rmtree(self.work_dir / "backup", ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass(frozen=True)
class Journal:
    created: tuple[Path, ...]
    replaced: tuple[tuple[Path, Path], ...]  # (path, backup)
    commit_path: Path
    commit_sha256: str


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is below ``root`` once ``..`` is resolved lexically."""
    full, base = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    return full != base and full.is_relative_to(base)


def read_journal(work_dir: Path, root: Path) -> Journal:
    """The journal left in ``work_dir``, checked; RepositoryStateError if it is damaged."""
    path = work_dir / JOURNAL
    try:
        data = load_json(path, "the transaction journal", limit=MAX_JOURNAL_BYTES)
        return journal_from_data(data, root, work_dir / "backup")
    except (FormatError, FileNotFoundError) as e:  # FileNotFoundError: a dangling link
        raise RepositoryStateError(
            f"damaged transaction journal {printable(str(path))} ({e}): the last change cannot "
            "be finished or undone automatically; restore the repository from a backup"
        ) from None


def journal_from_data(data: object, root: Path, backups: Path) -> Journal:
    """Validate a decoded journal: every file inside ``root``, every backup in ``backups``."""

    def confined(where: str, value: str, base: Path) -> Path:
        path = Path(value)
        if not _inside(path, base):
            raise FormatError(f"{where} {printable(value, 80)!r} is outside {base}")
        return path

    r = Reader(data)
    created = r.strings("created", max_items=MAX_JOURNAL_FILES, min_items=0)
    replaced = r.tables("replaced", max_items=MAX_JOURNAL_FILES)
    commit = r.table("commit")
    r.done()
    pairs = []
    for entry in replaced:
        pairs.append(
            (
                confined(entry.name("path"), entry.string("path"), root),
                confined(entry.name("backup"), entry.string("backup"), backups),
            )
        )
        entry.done()
    commit_path = confined("commit.path", commit.string("path"), root)
    sha256 = commit.string("sha256", max_len=64)
    if not _SHA256.fullmatch(sha256):
        raise FormatError("commit.sha256 is not a sha256 digest")
    commit.done()
    return Journal(
        tuple(confined(f"created[{i}]", c, root) for i, c in enumerate(created)),
        tuple(pairs),
        commit_path,
        sha256,
    )


def rollback(work_dir: Path, root: Path) -> None:
    """Undo a journaled commit: restore replaced files, remove created ones."""
    journal = read_journal(work_dir, root)
    for path, backup in journal.replaced:
        if backup.exists():
            try:
                data = read_bounded(backup, MAX_BACKUP_BYTES, printable(str(backup)))
            except FormatError as e:
                raise RepositoryStateError(f"cannot undo the last change: {e}") from None
            write_atomic(path, data)
    for path in journal.created:
        if path.exists() or path.is_symlink():
            path.unlink()
            fsync_dir(path.parent)
    (work_dir / JOURNAL).unlink()
    shutil.rmtree(work_dir / "backup", ignore_errors=True)
    shutil.rmtree(work_dir / "txn", ignore_errors=True)


def recover(work_dir: Path, root: Path) -> str | None:
    """Finish or undo a commit a dead process left behind. Returns what was done, if anything."""
    journal_path = work_dir / JOURNAL
    if not os.path.lexists(journal_path):  # a dangling or looping link is a damaged journal
        shutil.rmtree(work_dir / "txn", ignore_errors=True)
        return None
    journal = read_journal(work_dir, root)
    if _sha256(journal.commit_path) == journal.commit_sha256:
        journal_path.unlink()
        shutil.rmtree(work_dir / "backup", ignore_errors=True)
        shutil.rmtree(work_dir / "txn", ignore_errors=True)
        return COMPLETED
    rollback(work_dir, root)
    return ROLLED_BACK
