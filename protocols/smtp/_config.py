"""``ServerConfig``: what one listener offers (extensions) and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AUTH_MECHANISMS = frozenset({"PLAIN", "LOGIN"})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    hostname: str
    mode: Literal["smtp", "lmtp"] = "smtp"
    # Extensions (ENHANCEDSTATUSCODES is always on).
    pipelining: bool = True  # RFC 2920
    max_message_size: int = 50 * 1024 * 1024  # RFC 1870 SIZE; also the hard limit on data
    eightbitmime: bool = True  # RFC 6152
    smtputf8: bool = True  # RFC 6531
    chunking: bool = True  # RFC 3030 CHUNKING (BDAT)
    binarymime: bool = True  # RFC 3030 BINARYMIME (needs CHUNKING)
    dsn: bool = True  # RFC 3461
    starttls: bool = False  # the daemon has a certificate; announced only before TLS
    auth_mechanisms: tuple[str, ...] = ()  # e.g. ("PLAIN", "LOGIN"); RFC 4954
    auth_requires_tls: bool = True  # hide AUTH and answer 538 5.7.11 before TLS
    auth_required: bool = False  # submission: MAIL needs AUTH first (530 5.7.0)
    requiretls: bool = False  # RFC 8689; announced only under TLS
    vrfy_enabled: bool = False  # off: VRFY gets 252 2.1.5 (RFC 5321 §3.5.3)
    # Limits.
    max_line_length: int = 512  # RFC 5321 §4.5.3.1.4: command line incl. CRLF
    max_auth_line_length: int = 12288  # RFC 4954 §4: AUTH command and responses
    max_text_line_length: int = 1000  # RFC 5321 §4.5.3.1.6: DATA line incl. CRLF
    max_recipients: int = 100  # RFC 5321 §4.5.3.1.8; beyond: 452 4.5.3
    max_errors: int = 10  # protocol errors before 421 4.7.0 and close
    help_text: str = "See RFC 5321"

    def __post_init__(self) -> None:
        if self.mode not in ("smtp", "lmtp"):
            raise ValueError(f"mode must be 'smtp' or 'lmtp', not {self.mode!r}")
        if not self.hostname or any(c in self.hostname for c in " \r\n"):
            raise ValueError("hostname must be a non-empty token")
        if self.binarymime and not self.chunking:
            raise ValueError("BINARYMIME requires CHUNKING (RFC 3030 §4)")
        unknown = {m.upper() for m in self.auth_mechanisms} - AUTH_MECHANISMS
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms: {sorted(unknown)}")
        if self.max_message_size <= 0:
            raise ValueError("max_message_size must be positive")
        if self.max_line_length < 512 or self.max_text_line_length < 1000:
            raise ValueError("line limits may not be below RFC 5321 §4.5.3.1 minimums")
        if self.max_auth_line_length < self.max_line_length:
            raise ValueError("max_auth_line_length must be >= max_line_length")
        if self.max_recipients < 1 or self.max_errors < 1:
            raise ValueError("max_recipients and max_errors must be >= 1")

    @property
    def lmtp(self) -> bool:
        return self.mode == "lmtp"
