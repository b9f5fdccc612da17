"""Writing POP3 server output: status lines, multi-line responses, CAPA, message bodies.

Message bodies are sent as RFC 1939 §3 multi-line responses: CRLF line endings, every line
beginning with "." gets another ".", and ".CRLF" terminates. Stored mail is CRLF already, so
the common path is two C-level scans and one ``bytes.replace`` — no per-line Python loop.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from enum import Enum

from ._config import PLAINTEXT_MECHANISMS, Pop3Config


class ResponseCode(str, Enum):
    """RFC 2449 §8 extended response codes, plus RFC 3206 and RFC 6856 ones."""

    IN_USE = "IN-USE"  # RFC 2449 §8.1.1: maildrop locked by another session
    LOGIN_DELAY = "LOGIN-DELAY"  # RFC 2449 §8.1.2: logged in too recently
    SYS_TEMP = "SYS/TEMP"  # RFC 3206 §4: transient system problem
    SYS_PERM = "SYS/PERM"  # RFC 3206 §4: permanent system problem
    AUTH = "AUTH"  # RFC 3206 §5: credentials wrong
    UTF8 = "UTF8"  # RFC 6856 §2: needs UTF8 mode


def _line(text: str) -> bytes:
    # Our texts are ours or the daemon's; a CR/LF in them would forge a second reply.
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8")


def ok(text: str = "") -> bytes:
    return b"+OK" + (b" " + _line(text) if text else b"") + b"\r\n"


def err(text: str, code: ResponseCode | None = None) -> bytes:
    prefix = f"[{code.value}] " if code is not None else ""
    return b"-ERR " + _line(prefix + text) + b"\r\n"


def multiline(status: bytes, lines: Iterable[str]) -> bytes:
    """Status line + lines + ".": for our own listings (LIST, UIDL, CAPA), none starts with "."."""
    body = "".join(f"{line}\r\n" for line in lines).encode("utf-8")
    return status + body + b".\r\n"


def challenge(data: bytes) -> bytes:
    # RFC 5034 §4: "+" SP base64 CRLF; an empty challenge is "+ " CRLF.
    return b"+ " + base64.b64encode(data) + b"\r\n"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def maildrop_summary(count: int, octets: int) -> str:
    return f"maildrop has {plural(count, 'message')} ({octets} octets)"


def capabilities(config: Pop3Config, *, authorized: bool, tls: bool) -> list[str]:
    """RFC 2449 §6 capability lines for the current state."""
    caps = ["TOP", "UIDL"]
    plaintext_ok = tls or config.allow_plaintext_auth_without_tls
    if not authorized:
        if config.user_pass and plaintext_ok:
            caps.append("USER")  # §6.3: only where USER/PASS would be accepted
        mechs = [m for m in config.sasl_mechanisms if plaintext_ok or m not in PLAINTEXT_MECHANISMS]
        if mechs:
            caps.append("SASL " + " ".join(mechs))
        if config.stls and not tls:
            caps.append("STLS")  # RFC 2595 §4
        if config.utf8:
            caps.append("UTF8 USER")  # RFC 6856 §2: UTF-8 also in USER/PASS
    caps += ["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
    if config.expire is not None:
        caps.append(f"EXPIRE {config.expire}")
    if config.login_delay is not None:
        caps.append(f"LOGIN-DELAY {config.login_delay}")
    if config.implementation:
        caps.append(f"IMPLEMENTATION {config.implementation}")
    return caps


def normalize_crlf(raw: bytes) -> bytes:
    """Bare LF → CRLF; CRLF left alone. Free (two scans, no copy) when already CRLF."""
    if raw.count(b"\n") != raw.count(b"\r\n"):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return raw


def dot_stuff(raw: bytes) -> bytes:
    """RFC 1939 §3 byte-stuffing of CRLF text, ending in CRLF, *without* the final ".CRLF"."""
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    stuffed = raw.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed


def top_of_message(raw: bytes, lines: int) -> bytes:
    """RFC 1939 §7 TOP: the header, the blank line, then ``lines`` body lines (CRLF input).

    The answer is a prefix of the message whenever it has a blank line, so it is one slice;
    no copy of the body is made to find the cut.
    """
    if raw.startswith(b"\r\n"):
        body_start = 2  # empty header
    else:
        end = raw.find(b"\r\n\r\n")
        if end < 0:  # no body at all: the header, then the blank line TOP promises
            header = raw if raw.endswith(b"\r\n") or not raw else raw + b"\r\n"
            return header + b"\r\n"
        body_start = end + 4
    if lines > 1024 and lines > raw.count(b"\r\n", body_start):
        return raw  # asked for more lines than there are: all of it, without a Python loop
    pos = body_start
    for _ in range(lines):
        j = raw.find(b"\r\n", pos)
        if j < 0:
            return raw  # the last line has no CRLF; dot_stuff adds it
        pos = j + 2
    return raw[:pos]


def message_response(raw: bytes, top_lines: int | None) -> bytes:
    """The full RETR (+OK n octets) or TOP (+OK) response for a stored message."""
    raw = normalize_crlf(raw)
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"  # before counting: the octet count is of what we send, unstuffed
    if top_lines is None:
        status = b"+OK %d octets\r\n" % len(raw)
    else:
        raw = top_of_message(raw, top_lines)
        status = b"+OK\r\n"
    return b"".join((status, dot_stuff(raw), b".\r\n"))
