"""Reading POP3 client input: splitting lines with bounded memory, parsing command lines.

Lines end in CRLF (RFC 1939 §3); a bare LF is accepted too. A line longer than the limit is
reported once as ``TOO_LONG`` and the rest of it is dropped as it arrives, so a client that
never sends LF cannot make us buffer more than one limit's worth.
"""

from __future__ import annotations

from . import _abnf


class _TooLong:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TOO_LONG"


TOO_LONG = _TooLong()


class LineReader:
    __slots__ = ("_buf", "_discarding", "eof", "dropped")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line: drop through the next LF
        self.eof = False
        self.dropped = 0  # octets thrown away (over-long lines, STLS injection)

    def feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
            return
        if self._discarding:
            i = data.find(b"\n")
            if i < 0:
                self.dropped += len(data)
                return
            self.dropped += i + 1
            self._discarding = False
            data = data[i + 1 :]
        self._buf += data

    def clear(self) -> None:
        """Drop everything buffered (RFC 2595 §4 STLS: nothing read before TLS survives)."""
        self.dropped += len(self._buf)
        self._buf.clear()
        self._discarding = False

    def startswith_ci(self, prefix: bytes) -> bool:
        return bytes(self._buf[: len(prefix)]).upper() == prefix

    def has_line(self) -> bool:
        return b"\n" in self._buf

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_line(self, limit: int) -> bytes | _TooLong | None:
        """The next line without its CRLF (or LF); None if no complete line yet."""
        buf = self._buf
        i = buf.find(b"\n", 0, limit)
        if i < 0:
            if len(buf) < limit:
                return None
            # No LF within `limit` octets: the line is too long whatever follows.
            j = buf.find(b"\n", limit)
            if j < 0:
                self.dropped += len(buf)
                buf.clear()
                self._discarding = True
            else:
                self.dropped += j + 1
                del buf[: j + 1]
            return TOO_LONG
        line = bytes(buf[:i])
        del buf[: i + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line


def split_command(line: bytes) -> tuple[str, bytes] | None:
    """``keyword SP args`` → (KEYWORD, args); None when the keyword is malformed."""
    keyword, sep, args = line.partition(b" ")
    if not _abnf.KEYWORD.fullmatch(keyword):
        return None
    return keyword.decode("ascii").upper(), args


def parse_params(args: bytes) -> list[bytes]:
    """RFC 2449 §3 separates parameters by one SP; we tolerate runs of spaces."""
    return args.split()


def parse_msg_number(param: bytes) -> int | None:
    """A positive message number (RFC 1939 §3), or None when it is not a number at all.

    0 and out-of-range numbers come back as ints; the caller answers "no such message".
    """
    if not _abnf.MSG_NUMBER.fullmatch(param):
        return None if not param.isdigit() else -1  # absurdly long: valid syntax, no message
    return int(param)


def parse_line_count(param: bytes) -> int | None:
    if not _abnf.LINE_COUNT.fullmatch(param):
        return None
    if len(param) > 18:
        return 10**18  # more lines than any message has
    return int(param)


def decode_text(raw: bytes, utf8: bool) -> str | None:
    """ASCII, or UTF-8 once the client has sent UTF8 (RFC 6856 §2); no control characters."""
    try:
        text = raw.decode("utf-8" if utf8 else "ascii")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return None
    return text
