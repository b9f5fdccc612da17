"""POP3 grammar as named regexes (RFC 1939 §3, RFC 2449 §3, RFC 5034 §4, RFC 4422 §3.1)."""

from __future__ import annotations

import re

# RFC 2449 §3: keyword = 3*4VCHAR; we match case-insensitively by upper-casing first.
KEYWORD = re.compile(rb"[\x21-\x7e]{3,4}")

# RFC 1939 §3: a message-number is a decimal; we cap the digits so int() stays cheap and a
# number that long is simply "no such message".
MSG_NUMBER = re.compile(rb"[0-9]{1,10}")
# TOP's line count: any non-negative decimal; more than 18 digits is clamped to "all".
LINE_COUNT = re.compile(rb"[0-9]+")

# RFC 1939 §7 APOP: digest = 32 hexadecimal digits (the RFC's example uses lowercase).
APOP_DIGEST = re.compile(rb"[0-9a-fA-F]{32}")

# RFC 4422 §3.1: sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / "-" / "_"
SASL_MECH = re.compile(rb"[A-Za-z0-9_-]{1,20}")

# RFC 4648 §4 base64, as SASL carries it (RFC 5034 §4); "=" alone is the empty initial response.
BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

# RFC 1939 §7 UIDL: unique-id = 1*70 characters in 0x21..0x7E.
UNIQUE_ID = re.compile(r"[\x21-\x7e]{1,70}")

# RFC 1939 §7 APOP: the greeting's timestamp is a msg-id: "<" ... ">".
APOP_TIMESTAMP = re.compile(r"<[\x21-\x3d\x3f-\x7e]+>")

# Text we put on a response line (RFC 2449 §3: resp-text has no CR/LF).
RESP_TEXT = re.compile(r"[^\r\n]*")
