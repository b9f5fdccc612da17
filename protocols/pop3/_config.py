"""POP3 protocol settings: what the machine announces in CAPA and the limits it enforces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Mechanisms that expose the password to anyone on the wire; refused before TLS unless allowed.
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})


@dataclass(frozen=True, slots=True)
class Pop3Config:
    hostname: str = "localhost"
    greeting: str = "POP3 server ready"
    # RFC 2449 §6.9 IMPLEMENTATION; None leaves it out of CAPA.
    implementation: str | None = None

    # What the server offers.
    user_pass: bool = True  # RFC 1939 §7 USER/PASS, RFC 2449 §6.3 USER capability
    apop: bool = False  # RFC 1939 §7 APOP; the greeting then carries a timestamp
    sasl_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")  # RFC 5034
    stls: bool = False  # RFC 2595 §4; only when the daemon has a certificate
    utf8: bool = True  # RFC 6856
    # RFC 8314 §3 / RFC 2595 §3.2: no cleartext passwords before TLS.
    allow_plaintext_auth_without_tls: bool = False

    # RFC 2449 §6.7 EXPIRE (days or "NEVER"), §6.5 LOGIN-DELAY (seconds); None = not announced.
    expire: int | Literal["NEVER"] | None = None
    login_delay: int | None = None

    # Limits. RFC 2449 §4: command lines up to 255 octets incl. CRLF must be accepted;
    # AUTH lines and SASL responses may be longer (RFC 5034 §4).
    max_command_line: int = 512
    max_sasl_line: int = 8192
    max_bad_commands: int = 10
    max_auth_failures: int = 3

    def __post_init__(self) -> None:
        if self.max_command_line < 255:
            raise ValueError("max_command_line must be at least 255 (RFC 2449 §4)")
        if self.max_sasl_line < self.max_command_line:
            raise ValueError("max_sasl_line must be at least max_command_line")
        for text in (self.hostname, self.greeting, self.implementation or ""):
            if "\r" in text or "\n" in text:
                raise ValueError("configured texts must be single lines")
        for mech in self.sasl_mechanisms:
            if mech != mech.upper() or not mech or len(mech) > 20:
                raise ValueError(f"SASL mechanism names are upper-case, 1-20 chars: {mech!r}")
