"""COMPRESS=DEFLATE (RFC 4978): raw deflate streams the daemon swaps in after ``OK``.

Bounded memory: ``Inflater.decompress`` never returns more than ``max_output`` octets per
call; the rest stays inside zlib until the next call (``pending`` says so).
"""

from __future__ import annotations

import zlib


class CompressionError(Exception):
    """The peer sent data that is not a valid raw deflate stream."""


class Inflater:
    def __init__(self, max_output: int = 1024 * 1024) -> None:
        self._z = zlib.decompressobj(-15)  # RFC 4978 §4: raw deflate, no zlib header
        self.max_output = max_output

    def decompress(self, data: bytes) -> bytes:
        try:
            out = self._z.decompress(self._z.unconsumed_tail + data, self.max_output)
        except zlib.error as exc:
            raise CompressionError(str(exc)) from exc
        return out

    @property
    def pending(self) -> bool:
        return bool(self._z.unconsumed_tail)


class Deflater:
    def __init__(self, level: int = 6) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, -15)

    def compress(self, data: bytes) -> bytes:
        # RFC 4978 §4: flush after each response so the client sees it now
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)


def wrap(conn) -> tuple[Inflater, Deflater]:
    """After sending ``OK DEFLATE active``: a fresh inflater/deflater pair, with the octets
    the client already pipelined behind COMPRESS taken out of ``conn``, inflated and fed
    back. (Call ``inflater.decompress(b"")`` while ``inflater.pending`` to drain the rest.)"""
    inflater, deflater = Inflater(), Deflater()
    leftover = conn.take_buffered()
    if leftover:
        conn.receive_data(inflater.decompress(leftover))
    return inflater, deflater
