"""``FileBlobStore``: blobs as files under ``<root>/ab/cd/<sha256>``.

Durability of ``put`` (the ingest path acknowledges mail only after this returns and the
metadata commits): the content goes to a temp file in the final directory, is fsynced, renamed
over the final name, and the directory is fsynced — as are the parent directories when this put
created them (those last, after the file's own directory: by then the earlier fsyncs have
committed the mkdir on a journalling file system, so they cost no commit of their own) — all
before ``put`` returns. A put into a directory another put has just created (and not yet synced
the parent of) relies on its own fsyncs committing that mkdir too, which journalling file
systems (ext4, xfs) do; the window is milliseconds per new directory. A rename is atomic,
so a visible final name always has complete content; a crash leaves at most a ``.tmp-*`` file
(``remove_stale_temp_files``).

A put of content that is already stored writes nothing; it bumps the file's mtime
(``os.utime``) instead, because the sweeper only deletes files not touched within its grace
period (``delete_if_older``), and fsyncs the directory in case a concurrent first writer has
renamed but not yet synced it.

Blocking file I/O runs in a worker thread, one hop per call (every syscall of an operation in
one function), to keep the per-message overhead small.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator

from mailserver.blobs.base import BlobNotFound, BlobStore, _check_range, blob_id_of, validate_blob_id

__all__ = ["FileBlobStore"]

_TMP_PREFIX = ".tmp-"
_DOOMED_PREFIX = ".doomed-"
_HEX = "0123456789abcdef"


def _read_heads(paths: list[tuple[str, str, int]]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for blob_id, path, end in paths:
        try:
            with open(path, "rb", buffering=0) as f:
                out[blob_id] = f.read(end)
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
    return out


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore(BlobStore):
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True,
                 file_mode: int = 0o640) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.fsync = fsync  # False only for throwaway stores (benchmarks of the rest)
        self.file_mode = file_mode
        os.makedirs(self.root, exist_ok=True)

    # -- paths ------------------------------------------------------------------------------

    def path(self, blob_id: str) -> str:
        """The file of a blob (validated id: 64 lowercase hex, so no traversal is possible)."""
        validate_blob_id(blob_id)
        return os.path.join(self.root, blob_id[:2], blob_id[2:4], blob_id)

    # -- writing ----------------------------------------------------------------------------

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self._put_sync, bytes(data))

    def _put_sync(self, data: bytes) -> str:
        blob_id = blob_id_of(data)
        path = self.path(blob_id)
        directory = os.path.dirname(path)
        try:
            # Already stored: mark it recently used (sweeper grace), make sure its directory
            # entry is durable (a concurrent first writer may not have synced it yet).
            os.utime(path)
            if self.fsync:
                _fsync_dir(directory)
            return blob_id
        except FileNotFoundError:
            pass
        except PermissionError:
            pass  # someone else's file (e.g. written by root's CLI): replace it with ours
        created = self._make_dirs(directory)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{blob_id[:16]}-{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.file_mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        try:
            # Same content under the same name, so replacing a concurrent writer's file is fine.
            os.replace(tmp, path)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        if self.fsync:
            # the new name, then the entries of directories created for it (deepest first).
            # Syncing the parents last rather than right after each mkdir costs no journal
            # commit of its own on ext4/xfs (the earlier fsyncs already committed the mkdir),
            # and nothing is acknowledged before put returns either way.
            _fsync_dir(directory)
            for d in created:
                _fsync_dir(d)
        return blob_id

    def _make_dirs(self, directory: str) -> list[str]:
        """Create ``ab/cd`` as needed; returns the parents whose entries changed, deepest first
        (for the caller to fsync)."""
        parent = os.path.dirname(directory)
        if os.path.isdir(directory):  # one stat in the common case instead of two mkdir errors
            return []
        changed: list[str] = []
        for d, p in ((parent, self.root), (directory, parent)):
            try:
                os.mkdir(d, 0o750)
            except FileExistsError:
                continue
            changed.insert(0, p)
        return changed

    # -- reading ----------------------------------------------------------------------------

    async def get(self, blob_id: str) -> bytes:
        path = self.path(blob_id)
        return await asyncio.to_thread(self._read, path, blob_id, 0, None)

    async def get_range(self, blob_id: str, start: int, end: int) -> bytes:
        _check_range(start, end)
        path = self.path(blob_id)
        return await asyncio.to_thread(self._read, path, blob_id, start, end)

    async def heads(self, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        """All of them in one thread hop."""
        paths = [(b, self.path(b), end) for b, end in wanted]
        return await asyncio.to_thread(_read_heads, paths)

    @staticmethod
    def _read(path: str, blob_id: str, start: int, end: int | None) -> bytes:
        try:
            with open(path, "rb", buffering=0) as f:
                if end is None:
                    return f.read()
                f.seek(start)
                return f.read(end - start)
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None

    async def exists(self, blob_id: str) -> bool:
        path = self.path(blob_id)
        return await asyncio.to_thread(os.path.isfile, path)

    async def size(self, blob_id: str) -> int:
        path = self.path(blob_id)
        try:
            return (await asyncio.to_thread(os.stat, path)).st_size
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None

    async def mtime(self, blob_id: str) -> float:
        """Last put of this blob (epoch seconds); raises ``BlobNotFound``."""
        path = self.path(blob_id)
        try:
            return (await asyncio.to_thread(os.stat, path)).st_mtime
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None

    # -- deleting ---------------------------------------------------------------------------

    async def delete(self, blob_id: str) -> None:
        path = self.path(blob_id)
        await asyncio.to_thread(_unlink_quiet, path)

    async def delete_if_older(self, blob_id: str, cutoff: float) -> bool:
        path = self.path(blob_id)
        return await asyncio.to_thread(self._delete_if_older_sync, path, cutoff)

    def _delete_if_older_sync(self, path: str, cutoff: float) -> bool:
        # Rename first, then look at the mtime: a concurrent put either touched the file before
        # the rename (its mtime is recent: put it back) or finds no file and writes a new one.
        # Checking the mtime and then unlinking would leave a window between the two.
        directory, name = os.path.split(path)
        doomed = os.path.join(directory, f"{_DOOMED_PREFIX}{name}-{secrets.token_hex(4)}")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return False
        if os.stat(doomed).st_mtime >= cutoff:
            try:
                os.link(doomed, path)
            except FileExistsError:
                pass  # a put wrote it again meanwhile (same content, fresher mtime): keep that
            os.unlink(doomed)
            if self.fsync:
                _fsync_dir(directory)
            return False
        os.unlink(doomed)
        return True

    async def remove_stale_temp_files(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by crashed puts (older than ``older_than`` seconds)."""
        return await asyncio.to_thread(self._remove_stale_sync, time.time() - older_than)

    def _remove_stale_sync(self, cutoff: float) -> int:
        removed = 0
        for directory in self._leaf_dirs():
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith((_TMP_PREFIX, _DOOMED_PREFIX)):
                        try:
                            if entry.stat().st_mtime < cutoff:
                                os.unlink(entry.path)
                                removed += 1
                        except FileNotFoundError:
                            pass
        return removed

    # -- listing ----------------------------------------------------------------------------

    def _leaf_dirs(self) -> list[str]:
        out = []
        for a in sorted(os.listdir(self.root)):
            if len(a) != 2 or any(c not in _HEX for c in a):
                continue
            pa = os.path.join(self.root, a)
            if not os.path.isdir(pa):
                continue
            for b in sorted(os.listdir(pa)):
                if len(b) == 2 and all(c in _HEX for c in b):
                    out.append(os.path.join(pa, b))
        return out

    async def iter_ids(self) -> AsyncIterator[str]:
        for directory in await asyncio.to_thread(self._leaf_dirs):
            names = await asyncio.to_thread(_list_ids, directory)
            for name in names:
                yield name


def _list_ids(directory: str) -> list[str]:
    prefix = os.path.basename(os.path.dirname(directory)) + os.path.basename(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if name.startswith(prefix) and len(name) == 64 and all(c in _HEX for c in name):
            out.append(name)
    return out


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
