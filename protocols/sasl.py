"""Server side of the SASL mechanisms we offer: PLAIN (RFC 4616) and LOGIN
(draft-murchison-sasl-login). Pure functions over bytes; checking the credentials is the
caller's job (``mailserver.auth``).

    mech = sasl.server_mechanism(event.mechanism)     # on AuthRequest
    step = mech.step(event.initial_response)          # and on each AuthResponse(data)
    if isinstance(step, sasl.Credentials):            # verify, then accept() or reject(535, ...)
    else: conn.auth_challenge(step)                     # bytes: the next challenge
"""

from __future__ import annotations

from dataclasses import dataclass


class SaslError(Exception):
    """Malformed client message (answer 501 5.5.2, RFC 4954 §4)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    authcid: str  # the login name
    password: str
    authzid: str = ""  # identity to act as; "" means the same as authcid

    def __repr__(self) -> str:  # never log passwords
        return f"Credentials(authcid={self.authcid!r}, authzid={self.authzid!r}, password=<hidden>)"


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8") from None


def decode_plain(message: bytes) -> Credentials:
    """RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd."""
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("PLAIN message needs exactly two NUL separators")
    authzid, authcid, password = (
        _utf8(p, n) for p, n in zip(parts, ("authzid", "authcid", "password"), strict=True)
    )
    if not authcid or not password:
        raise SaslError("PLAIN authcid and password must not be empty")
    if len(message) > 255 * 3 + 2:  # RFC 4616 §2: each part at most 255 octets
        raise SaslError("PLAIN message too long")
    return Credentials(authcid=authcid, password=password, authzid=authzid)


class PlainMechanism:
    name = "PLAIN"

    def __init__(self) -> None:
        self._asked = False

    def step(self, response: bytes | None) -> bytes | Credentials:
        if response is None:
            if self._asked:
                raise SaslError("PLAIN expects one message")
            self._asked = True
            return b""  # RFC 4954 §4: empty challenge, the client sends the message
        return decode_plain(response)


class LoginMechanism:
    """Two steps: "Username:" then "Password:" (clients may send the user name as the
    initial response)."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: str | None = None
        self._started = False

    def step(self, response: bytes | None) -> bytes | Credentials:
        if not self._started:
            self._started = True
            if response is None:
                return b"Username:"
        if response is None:
            raise SaslError("LOGIN expects a response")
        if self._user is None:
            self._user = _utf8(response, "user name")
            if not self._user:
                raise SaslError("empty user name")
            return b"Password:"
        password = _utf8(response, "password")
        if not password:
            raise SaslError("empty password")
        return Credentials(authcid=self._user, password=password)


def server_mechanism(name: str) -> PlainMechanism | LoginMechanism:
    name = name.upper()
    if name == "PLAIN":
        return PlainMechanism()
    if name == "LOGIN":
        return LoginMechanism()
    raise SaslError(f"unsupported mechanism {name}")
