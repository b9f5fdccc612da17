"""Faster drop-ins for dkimpy's hot spots, installed into dkimpy at import.

Profiling ``check_message`` (5 KB and 50 KB messages signed ed25519 + RSA) put most of the CPU
in three dkimpy functions; each replacement returns exactly what the original returns
(tests/mailauth/test_dkimpy_fast.py compares them on random input) and is used by dkimpy's
verifier and by our signer alike:

- ``Relaxed.canonicalize_body`` (RFC 6376 §3.4.4): dkimpy's ``re.sub(b"[\\t ]+", b" ", body)``
  rewrites every single space between words (one match per word) and its ``[\\t ]+\\r\\n``
  pass starts a match at each of them too: ~70% of the CPU on a 50 KB message. Here trailing
  whitespace is stripped line by line and only runs that change (a tab, or two or more WSP)
  are rewritten, and a body with neither a tab nor two spaces in a row is not scanned for
  them at all: ~10× faster.
- ``Relaxed.canonicalize_headers`` (§3.4.2): the same with precompiled patterns and plain
  ``bytes.replace`` for unfolding (dkimpy compiles-or-looks-up two regexes per field).
- ``RSASSA_PKCS1_v1_5_verify``: dkimpy verifies RSA in pure Python (``pow`` plus byte
  conversions in Python loops); OpenSSL through ``cryptography`` does it ~10× faster. Keys it
  cannot load (a tiny modulus, an odd exponent) fall back to dkimpy's code, so the outcome for
  them is dkimpy's.
- ``evaluate_pk`` (key record parsing, a pure-Python ASN.1 decoder for RSA): memoized on the
  record's bytes, as the same few keys sign most mail.
- ``rfc822_parse``: dkimpy splits the *whole* message into lines with a regex and joins the
  body lines again, for every signature it verifies (~4% of an MX process's CPU at 5 KB).
  Here only the header block is split; the body is the rest, with bare LFs turned into CRLF
  only when it has any (the same bytes as dkimpy's split-and-join).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim import canonicalization

__all__ = ["dkimpy_relaxed_body", "dkimpy_relaxed_headers", "dkimpy_rfc822_parse",
           "dkimpy_rsa_verify", "evaluate_pk", "install", "relaxed_body", "relaxed_headers",
           "rfc822_parse", "rsa_verify"]

# the reference versions, kept for the equivalence tests and the RSA fallback
dkimpy_relaxed_body = canonicalization.Relaxed.canonicalize_body
dkimpy_relaxed_headers = canonicalization.Relaxed.canonicalize_headers
dkimpy_rsa_verify = dkim.RSASSA_PKCS1_v1_5_verify
dkimpy_evaluate_pk = dkim.evaluate_pk
dkimpy_rfc822_parse = dkim.rfc822_parse

_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")  # only runs that are not already one space
_WSP = re.compile(rb"[\t ]+")


def relaxed_body(body: bytes) -> bytes:
    # "[\t ]+\r\n" -> "\r\n": every line but an unterminated last one loses trailing WSP
    if b" \r\n" in body or b"\t\r\n" in body:
        lines = body.split(b"\r\n")
        last = lines.pop()
        body = b"\r\n".join([line.rstrip(b" \t") for line in lines] + [last])
    if b"\t" in body or b"  " in body:  # else nothing to rewrite: skip the regex scan, which
        body = _WSP_RUN.sub(b" ", body)  # tries every position (~1 ms per 50 KB)
    return canonicalization.correct_empty_body(canonicalization.strip_trailing_lines(body))


def relaxed_headers(headers: list[Any]) -> list[tuple[bytes, bytes]]:
    # unfold ("\r?\n" removed) with two replaces: the same bytes, as no pass creates a pair
    return [(name.lower().rstrip(),
             _WSP.sub(b" ", value.replace(b"\r\n", b"").replace(b"\n", b"")).strip() + b"\r\n")
            for name, value in headers]


_LINE_END = re.compile(rb"\r?\n")
_EMPTY_LINE = re.compile(rb"\n\r?\n")  # a line terminator, then an empty line
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``: ([name, value] pairs, CRLF body), its errors included."""
    if message.startswith((b"\n", b"\r\n")):
        head, rest = b"", message[message.index(b"\n") + 1:]
    else:
        m = _EMPTY_LINE.search(message)
        head, rest = (message, b"") if m is None else (message[:m.start() + 1],
                                                       message[m.end():])
    headers: list[list[bytes]] = []
    for line in _LINE_END.split(head):
        if not line:
            break  # the empty line (or the end of a message that has no body)
        if line[0] in (0x09, 0x20):
            headers[-1][1] += line + b"\r\n"  # IndexError on a leading continuation, as dkimpy
            continue
        fm = _FIELD_NAME.match(line)
        if fm is not None:
            headers.append([fm.group(1), line[fm.end(0):] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError("Unexpected characters in RFC822 header: %s" % line)
    if rest.count(b"\n") != rest.count(b"\r\n"):  # a bare LF: dkimpy's join makes it CRLF
        rest = _LINE_END.sub(b"\r\n", rest)
    return headers, rest


_PREHASHED = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}


@functools.lru_cache(maxsize=512)
def _public_key(modulus: int, exponent: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


def rsa_verify(hash: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify(hash, signature, public_key)`` through OpenSSL."""
    algorithm = _PREHASHED.get(str(getattr(hash, "name", "")).lower())
    try:
        key = _public_key(public_key["modulus"], public_key["publicExponent"])
    except (ValueError, KeyError, TypeError):
        key = None
    if algorithm is None or key is None:
        return dkimpy_rsa_verify(hash, signature, public_key)
    size = (key.key_size + 7) // 8
    if len(signature) < size:  # dkimpy reads the signature as an integer: leading zeros
        signature = bytes(size - len(signature)) + signature
    try:
        key.verify(signature, hash.digest(), padding.PKCS1v15(), Prehashed(algorithm))
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=1024)
def evaluate_pk(name: bytes | str, s: bytes | str) -> tuple[Any, Any, Any, bool]:
    """dkimpy's ``evaluate_pk``, memoized (errors are not cached: they raise every time)."""
    return dkimpy_evaluate_pk(name, s)


def install() -> None:
    """Put the replacements into dkimpy (idempotent)."""
    relaxed = canonicalization.Relaxed
    relaxed.canonicalize_body = staticmethod(relaxed_body)  # type: ignore[method-assign]
    relaxed.canonicalize_headers = staticmethod(relaxed_headers)  # type: ignore[method-assign]
    dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify
    dkim.evaluate_pk = evaluate_pk
    dkim.rfc822_parse = rfc822_parse


install()
