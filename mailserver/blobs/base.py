"""The blob store interface: content-addressed (sha256 hex) immutable byte strings.

A blob id is the lowercase hex SHA-256 of the content, so storing the same message twice stores
it once, and ids can be checked before they reach a path or a URL (``validate_blob_id``).
Reference counts live in the metadata store (``mailserver.store.blobrefs``), not here.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

__all__ = ["BlobStore", "BlobNotFound", "InvalidBlobId", "validate_blob_id", "blob_id_of"]

_BLOB_ID = re.compile(r"[0-9a-f]{64}")


class BlobNotFound(LookupError):
    """No blob with this id in the store."""


class InvalidBlobId(ValueError):
    """Not 64 lowercase hex digits (never turned into a path or a key)."""


def validate_blob_id(blob_id: str) -> str:
    if not isinstance(blob_id, str) or _BLOB_ID.fullmatch(blob_id) is None:
        raise InvalidBlobId(f"invalid blob id {blob_id!r}")
    return blob_id


def blob_id_of(data: bytes) -> str:
    """The id ``put(data)`` returns."""
    return hashlib.sha256(data).hexdigest()


class BlobStore(abc.ABC):
    """Content-addressed storage of raw messages (filesystem, S3)."""

    @abc.abstractmethod
    async def put(self, data: bytes) -> str:
        """Store ``data``; returns its sha256 hex id. Durable when it returns; idempotent (the
        same content is written once, a repeated put only marks it as recently used)."""

    @abc.abstractmethod
    async def get(self, blob_id: str) -> bytes:
        """The whole blob; raises ``BlobNotFound``."""

    async def get_range(self, blob_id: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (clamped to the blob, like a slice); raises ``BlobNotFound``.

        IMAP partial fetches (``BODY[]<start.len>``) use it; stores override it to avoid
        reading the whole blob.
        """
        _check_range(start, end)
        return (await self.get(blob_id))[start:end]

    async def heads(self, wanted: list[tuple[str, int]]) -> dict[str, bytes]:
        """blob id → its first ``end`` octets, for (blob id, end) pairs; raises
        ``BlobNotFound`` for a missing one. FETCH ENVELOPE of a batch of messages reads their
        headers with one call; stores override it to do that in one round trip."""
        datas = await asyncio.gather(*(self.get_range(b, 0, end) for b, end in wanted))
        return {b: d for (b, _e), d in zip(wanted, datas)}

    @abc.abstractmethod
    async def exists(self, blob_id: str) -> bool: ...

    @abc.abstractmethod
    async def size(self, blob_id: str) -> int:
        """Size in bytes; raises ``BlobNotFound``."""

    @abc.abstractmethod
    async def delete(self, blob_id: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    async def delete_if_older(self, blob_id: str, cutoff: float) -> bool:
        """Delete unless the blob was written or re-put at or after ``cutoff`` (epoch seconds).

        The sweeper calls this so that a blob re-put after its reference row was swept survives
        (see ``mailserver.store.blobrefs.sweep``). Stores that know no modification time fall
        back to a plain delete. Returns whether it deleted.
        """
        await self.delete(blob_id)
        return True

    @abc.abstractmethod
    def iter_ids(self) -> AsyncIterator[str]:
        """Every blob id in the store, in no particular order (fsck, orphan sweep).

        An async iterator because listing a remote store is I/O: ``async for i in s.iter_ids()``.
        """

    async def close(self) -> None:
        """Release connections (no-op for stores that hold none)."""


def _check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise ValueError(f"invalid byte range [{start}, {end})")
