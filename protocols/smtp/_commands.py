"""Parsing command arguments (MAIL, RCPT, their ESMTP parameters, xtext) into typed values.

Each parser returns a value or raises ``CommandError`` carrying the reply to send; the
connection decides *when* a command is allowed, these functions only what it says.
"""

from __future__ import annotations

import re

from . import _abnf
from ._config import ServerConfig
from ._events import MailParams, RcptParams, Reply


class CommandError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply


def _err(code: int, enhanced: str, text: str) -> CommandError:
    return CommandError(Reply(code, enhanced, text))


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: "+HH" escapes; anything outside xtext is a 501."""
    if not _abnf.xtext_re.fullmatch(value):
        raise _err(501, "5.5.4", "Invalid xtext in parameter value")
    raw = _abnf.xtext_hex_re.sub(lambda m: chr(int(m.group(1), 16)), value)
    # The decoded octets are meant to be UTF-8 (RFC 6533 §3); hex escapes give latin-1 chars.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _unitext_decode(value: str) -> str:
    # RFC 6533 §3: utf-8-addr-xtext / utf-8-addr-unitext use "\x{HEX}" for code points.
    def repl(m: re.Match[str]) -> str:
        cp = int(m.group(1), 16)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            raise _err(501, "5.5.4", "Invalid code point in ORCPT")
        return chr(cp)

    return _abnf.unitext_re.sub(repl, value)


def parse_path(text: str, *, null_ok: bool, postmaster_ok: bool, bad: Reply) -> tuple[str, str]:
    """Split "<path> params" into (address, params text). Source routes are dropped."""
    if null_ok and text.startswith("<>"):
        rest = text[2:]
        address = ""
    else:
        m = _abnf.path_re.match(text)
        if m is None and postmaster_ok:
            m = _abnf.postmaster_re.match(text)
        if m is None:
            raise CommandError(bad)
        address = m.group("mailbox")
        rest = text[m.end() :]
        domain = m.groupdict().get("domain")
        if domain is not None:
            if domain.startswith("["):
                if not _abnf.valid_address_literal(domain):
                    raise CommandError(bad)
            elif not _abnf.valid_domain_length(domain):
                raise CommandError(bad)
    if rest and not rest.startswith(" "):
        raise CommandError(bad)
    return address, rest.strip(" ")


def split_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split():
        m = _abnf.esmtp_param_re.fullmatch(item)
        if m is None:
            raise _err(501, "5.5.4", f"Syntax error in parameter {item[:40]!r}")
        keyword = m.group("keyword").upper()
        if keyword in params:
            raise _err(501, "5.5.4", f"Duplicate parameter {keyword}")
        params[keyword] = m.group("value")
    return params


def _unsupported(keyword: str) -> CommandError:
    return _err(555, "5.5.4", f"Unsupported parameter {keyword}")


def _no_value(keyword: str, value: str | None) -> None:
    if value is not None:
        raise _err(501, "5.5.4", f"{keyword} takes no value")


def _value(keyword: str, value: str | None) -> str:
    if value is None:
        raise _err(501, "5.5.4", f"{keyword} requires a value")
    return value


def parse_mail_params(
    params: dict[str, str | None],
    config: ServerConfig,
    *,
    extended: bool,
    tls: bool,
    auth_offered: bool,
) -> MailParams:
    if params and not extended:
        # RFC 5321 §4.1.1.11 / RFC 1869: parameters only after EHLO
        raise _err(555, "5.5.4", "Parameters not supported after HELO")
    size = body = ret = envid = auth = None
    smtputf8 = requiretls = False
    for keyword, value in params.items():
        if keyword == "SIZE":  # RFC 1870 §6: size-value = 1*20DIGIT
            value = _value(keyword, value)
            if not (value.isascii() and value.isdigit()) or len(value) > 20:
                raise _err(501, "5.5.4", "Invalid SIZE value")
            size = int(value)
        elif keyword == "BODY":
            body = _value(keyword, value).upper()
            allowed = {"7BIT"}
            if config.eightbitmime:
                allowed.add("8BITMIME")
            if config.binarymime:
                allowed.add("BINARYMIME")
            if body not in allowed:
                raise _err(501, "5.5.4", "Unsupported BODY type")
        elif keyword == "SMTPUTF8" and config.smtputf8:
            _no_value(keyword, value)
            smtputf8 = True
        elif keyword == "RET" and config.dsn:
            ret = _value(keyword, value).upper()
            if ret not in ("FULL", "HDRS"):
                raise _err(501, "5.5.4", "RET must be FULL or HDRS")
        elif keyword == "ENVID" and config.dsn:
            envid = xtext_decode(_value(keyword, value))
            if len(envid) > 100:  # RFC 3461 §4.4
                raise _err(501, "5.5.4", "ENVID too long")
        elif keyword == "AUTH" and auth_offered:
            value = _value(keyword, value)
            auth = value if value == "<>" else xtext_decode(value)
        elif keyword == "REQUIRETLS" and config.requiretls and tls:
            _no_value(keyword, value)
            requiretls = True
        else:
            raise _unsupported(keyword)
    return MailParams(size, body, smtputf8, ret, envid, auth, requiretls)


_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_rcpt_params(
    params: dict[str, str | None], config: ServerConfig, *, extended: bool
) -> RcptParams:
    if params and not extended:
        raise _err(555, "5.5.4", "Parameters not supported after HELO")
    notify = orcpt = None
    for keyword, value in params.items():
        if keyword == "NOTIFY" and config.dsn:  # RFC 3461 §4.1
            items = frozenset(v.upper() for v in _value(keyword, value).split(","))
            if items != {"NEVER"} and not (items and items <= _NOTIFY):
                raise _err(501, "5.5.4", "NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")
            notify = items
        elif keyword == "ORCPT" and config.dsn:  # RFC 3461 §4.2: addr-type ";" xtext
            addr_type, sep, encoded = _value(keyword, value).partition(";")
            if (
                not sep
                or not re.fullmatch(_abnf.ATOM, addr_type)
                or not addr_type.isascii()
                or not encoded
            ):
                raise _err(501, "5.5.4", "Invalid ORCPT")
            address = xtext_decode(encoded)
            if addr_type.lower() == "utf-8":
                address = _unitext_decode(address)
            orcpt = (addr_type, address)
        else:
            raise _unsupported(keyword)
    return RcptParams(notify, orcpt)
