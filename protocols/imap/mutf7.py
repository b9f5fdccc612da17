"""Modified UTF-7 for IMAP mailbox names (RFC 3501 §5.1.3), strict in both directions."""

from __future__ import annotations

import binascii


class Mutf7Error(ValueError):
    """A mailbox name that is not valid modified UTF-7 (the server answers BAD)."""


def _is_direct(ch: str) -> bool:
    # RFC 3501 §5.1.3: printable US-ASCII (0x20-0x7e) represent themselves, "&" excepted
    return "\x20" <= ch <= "\x7e"


def encode(name: str) -> bytes:
    """Encode a mailbox name to modified UTF-7."""
    out: list[bytes] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be", "surrogatepass")
            b64 = binascii.b2a_base64(utf16, newline=False).rstrip(b"=").replace(b"/", b",")
            out.append(b"&" + b64 + b"-")
            pending.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            pending.append(ch)
    flush()
    return b"".join(out)


_B64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def decode(data: bytes) -> str:
    """Decode modified UTF-7; raise Mutf7Error on anything a conforming client would not send."""
    out: list[str] = []
    i = 0
    n = len(data)
    last_was_encoded = False
    while i < n:
        c = data[i]
        if c != 0x26:  # "&"
            if not 0x20 <= c <= 0x7E:
                raise Mutf7Error(f"invalid octet 0x{c:02x} in mailbox name")
            out.append(chr(c))
            i += 1
            last_was_encoded = False
            continue
        end = data.find(b"-", i + 1)
        if end < 0:
            raise Mutf7Error("unterminated &-sequence in mailbox name")
        chunk = data[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            last_was_encoded = False
            continue
        if last_was_encoded:
            # RFC 3501 §5.1.3: adjacent encoded runs must be one run
            raise Mutf7Error("adjacent &-sequences in mailbox name")
        if any(b not in _B64_CHARS for b in chunk):
            raise Mutf7Error("invalid character in &-sequence")
        if len(chunk) % 4 == 1:
            raise Mutf7Error("truncated &-sequence")
        b64 = chunk.replace(b",", b"/") + b"=" * (-len(chunk) % 4)
        try:
            raw = binascii.a2b_base64(b64, strict_mode=True)
        except binascii.Error as exc:
            raise Mutf7Error("invalid base64 in &-sequence") from exc
        # leftover bits must be zero: re-encoding must give the same text back
        if binascii.b2a_base64(raw, newline=False).rstrip(b"=") != chunk.replace(b",", b"/"):
            raise Mutf7Error("non-zero padding bits in &-sequence")
        if len(raw) % 2:
            raise Mutf7Error("odd number of UTF-16 octets in &-sequence")
        try:
            text = raw.decode("utf-16-be")  # strict: rejects unpaired surrogates
        except UnicodeDecodeError as exc:
            raise Mutf7Error("invalid UTF-16 in &-sequence") from exc
        if any(_is_direct(ch) for ch in text):
            raise Mutf7Error("printable ASCII must not be encoded")
        out.append(text)
        last_was_encoded = True
    return "".join(out)
