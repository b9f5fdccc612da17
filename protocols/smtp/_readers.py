"""Readers for the three input framings: command lines, DATA bodies and BDAT chunks.

All of them work on one ``ReceiveBuffer`` and scan with ``bytes.find``/``count`` so that a
large message costs a few C-level passes per received chunk, not a Python loop per line.
"""

from __future__ import annotations


class ReceiveBuffer:
    """Bytes received and not yet consumed. Consuming moves an offset; compaction is lazy
    so a long pipeline of small commands is not quadratic."""

    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def append(self, data: bytes) -> None:
        if self._start and self._start == len(self._data):
            self._data.clear()
            self._start = 0
        self._data += data

    def find(self, sub: bytes, start: int = 0, end: int | None = None) -> int:
        s = self._start
        i = self._data.find(sub, s + start, len(self._data) if end is None else s + end)
        return i - s if i >= 0 else -1

    def rfind(self, sub: bytes) -> int:
        i = self._data.rfind(sub, self._start)
        return i - self._start if i >= 0 else -1

    def startswith(self, prefix: bytes) -> bool:
        return self._data.startswith(prefix, self._start)

    def endswith(self, suffix: bytes) -> bool:
        return len(self) >= len(suffix) and self._data.endswith(suffix)

    def take(self, n: int) -> bytes:
        s = self._start
        with memoryview(self._data) as view:
            out = bytes(view[s : s + n])
        self.consume(n)
        return out

    def consume(self, n: int) -> None:
        self._start += n
        if self._start >= len(self._data):
            self._data.clear()
            self._start = 0
        elif self._start > 65536 and self._start * 2 > len(self._data):
            del self._data[: self._start]
            self._start = 0

    def clear(self) -> int:
        n = len(self)
        self._data.clear()
        self._start = 0
        return n


class LineTooLong:
    """Returned by ``LineReader.read`` once the whole over-long line has been skipped."""

    __slots__ = ()


LINE_TOO_LONG = LineTooLong()


class LineReader:
    """Command lines up to ``limit`` octets including the LF; longer lines are skipped up
    to their LF without buffering them (RFC 5321 §4.5.3.1.4), then reported once."""

    __slots__ = ("discarding",)

    def __init__(self) -> None:
        self.discarding = False

    def read(self, buf: ReceiveBuffer, limit: int) -> bytes | LineTooLong | None:
        if not self.discarding:
            i = buf.find(b"\n", 0, limit)
            if i >= 0:
                return buf.take(i + 1)
            if len(buf) < limit:
                return None
            self.discarding = True
        i = buf.find(b"\n")
        if i < 0:
            buf.clear()
            return None
        buf.consume(i + 1)
        self.discarding = False
        return LINE_TOO_LONG


class DataReader:
    """The body after DATA (RFC 5321 §4.5.2): un-stuffs dots, ends only at CRLF "." CRLF.

    Consumes complete lines only, so the end marker is never split across calls. Bare CR
    or LF anywhere (RFC 5321 §2.3.8; SMTP smuggling), a line over the text-line limit, or
    more than ``max_size`` octets mark the message bad; from then on nothing is kept, but
    the reader still runs to the end marker so the session stays in step. Every flag is a
    function of the content alone, never of how it was split into reads.
    """

    __slots__ = (
        "parts",
        "size",
        "at_line_start",
        "bare_newline",
        "line_too_long",
        "too_big",
        "max_size",
        "max_raw_line",
    )

    def __init__(self, max_size: int, max_text_line_length: int) -> None:
        self.parts: list[bytes] | None = []
        self.size = 0  # octets after un-stuffing
        self.at_line_start = True
        self.bare_newline = False
        self.line_too_long = False
        self.too_big = False
        self.max_size = max_size
        # Octets before CRLF; +1 because the limit does not count a stuffed dot
        # (RFC 5321 §4.5.3.1.6) and we do not look at which lines had one.
        self.max_raw_line = max_text_line_length - 1

    def feed(self, buf: ReceiveBuffer) -> bool:
        """Consume what can be consumed; True once the end marker has been read."""
        if self.at_line_start and buf.startswith(b".\r\n"):
            buf.consume(3)
            return True
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._lines(buf.take(end + 2))
            buf.consume(3)
            return True
        last = buf.rfind(b"\r\n")
        if last >= 0:
            self._lines(buf.take(last + 2))
        pending = len(buf)  # a partial line, no CRLF in it
        if pending > self.max_raw_line + 1:
            # Certainly over-long: drop it, but keep a trailing CR that may start the CRLF.
            self._overlong(buf.take(pending - 1 if buf.endswith(b"\r") else pending))
        return False

    def _lines(self, region: bytes) -> None:
        # ``region`` is whole lines, each ending in CRLF. A few C-level passes, no per-line
        # Python work except for the window hops in _has_long_line.
        first_dot = self.at_line_start and region[:1] == b"."
        self.at_line_start = True
        if not self.bare_newline:
            crlf = region.count(b"\r\n")
            if region.count(b"\n") != crlf or region.count(b"\r") != crlf:
                self.bare_newline = True
        if not self.line_too_long and self._has_long_line(region):
            self.line_too_long = True
        if self.parts is not None and not (self.bare_newline or self.line_too_long):
            if region.find(b"\r\n.") >= 0:
                region = region.replace(b"\r\n.", b"\r\n")
            if first_dot:
                region = region[1:]
            self.size += len(region)
            if self.size > self.max_size:
                self.too_big = True
                self.parts = None
            else:
                self.parts.append(region)
            return
        self.parts = None
        self.size += len(region) - region.count(b"\r\n.") - first_dot
        if self.size > self.max_size:
            self.too_big = True

    def _has_long_line(self, region: bytes) -> bool:
        # Hop from line start to the last LF within reach: a window of max_raw_line + 2
        # octets without any LF holds a line longer than the limit. About one hop per
        # max_raw_line octets. (LF-separated here; a bare LF is reported anyway.)
        reach = self.max_raw_line + 2
        end = len(region)
        if end <= reach:
            return False
        pos = 0
        rfind = region.rfind
        while end - pos > reach:
            lf = rfind(b"\n", pos, pos + reach)
            if lf < 0:
                return True
            pos = lf + 1
        return False

    def _overlong(self, piece: bytes) -> None:
        first_dot = self.at_line_start and piece[:1] == b"."
        self.at_line_start = False
        self.size += len(piece) - first_dot
        self.too_big = self.too_big or self.size > self.max_size
        self.line_too_long = True
        # No CRLF in ``piece`` and no trailing CR: any CR or LF in it is bare.
        if b"\n" in piece or b"\r" in piece:
            self.bare_newline = True
        self.parts = None

    def data(self) -> bytes:
        return b"".join(self.parts) if self.parts is not None else b""


class ChunkReader:
    """Exactly ``size`` octets of a BDAT chunk (RFC 3030 §2), binary-safe."""

    __slots__ = ("remaining", "keep", "parts")

    def __init__(self, size: int, keep: bool) -> None:
        self.remaining = size
        self.keep = keep
        self.parts: list[bytes] = []

    def feed(self, buf: ReceiveBuffer) -> bool:
        n = min(self.remaining, len(buf))
        if n:
            if self.keep:
                self.parts.append(buf.take(n))
            else:
                buf.consume(n)
            self.remaining -= n
        return self.remaining == 0
