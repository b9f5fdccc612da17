"""IMAP grammar fragments (RFC 3501 §9, RFC 9051 §9) lifted into named regexes.

Everything here works on ``bytes``; the reader in ``_readers.py`` strings them together.
"""

from __future__ import annotations

import re

# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials /
#              resp-specials
ATOM_CHAR = (
    rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]"  # also excludes "]" (resp-specials)
)
ASTRING_CHAR = rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]"  # ATOM-CHAR / "]"
TAG_CHAR = rb"[\x21\x23\x24\x26\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]"  # ASTRING-CHAR except "+"
LIST_CHAR = (
    rb"[\x21\x23-\x27\x2a-\x5b\x5d-\x7a\x7c-\x7e]"  # ATOM-CHAR / list-wildcards / resp-specials
)

atom = re.compile(ATOM_CHAR + rb"+")
astring_atom = re.compile(ASTRING_CHAR + rb"+")
tag = re.compile(TAG_CHAR + rb"+")
list_mailbox_atom = re.compile(LIST_CHAR + rb"+")
# a string of atom chars that may also hold "." "[" "]" "<" ">" for fetch att names
fetch_att_name = re.compile(rb"[A-Za-z0-9.]+")

number = re.compile(rb"[0-9]+")
# RFC 3501 §9: literal = "{" number "}" CRLF; RFC 7888: "{" number "+}"; RFC 3516: "~{" number "}"
literal_marker = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}")
literal_at_end = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")

# quoted = DQUOTE *QUOTED-CHAR DQUOTE
# QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials
quoted_7bit = re.compile(rb'"((?:[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]|\\["\\])*)"')
# RFC 9051 §9 / RFC 6855: QUOTED-CHAR additionally allows UTF8-2 / UTF8-3 / UTF8-4 (validated later)
quoted_8bit = re.compile(rb'"((?:[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\xff]|\\["\\])*)"')
quoted_unescape = re.compile(rb'\\(["\\])')

# sequence-set (RFC 3501 §9, RFC 5182 "$")
seq_number = rb"(?:[1-9][0-9]{0,9}|\*)"
sequence_set = re.compile(
    rb"\$|"
    + seq_number
    + rb"(?::"
    + seq_number
    + rb")?(?:,"
    + seq_number
    + rb"(?::"
    + seq_number
    + rb")?)*"
)

MONTHS = (
    b"JAN",
    b"FEB",
    b"MAR",
    b"APR",
    b"MAY",
    b"JUN",
    b"JUL",
    b"AUG",
    b"SEP",
    b"OCT",
    b"NOV",
    b"DEC",
)
# date-text = date-day "-" date-month "-" date-year
date_text = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
date_time = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)

# section-part = nz-number *("." nz-number)
section_part = re.compile(rb"[1-9][0-9]{0,9}(?:\.[1-9][0-9]{0,9})*")
partial = re.compile(rb"<([0-9]{1,10})\.([1-9][0-9]{0,9})>")
partial_start = re.compile(rb"<([0-9]{1,10})>")

# base64 (RFC 4648) as used for AUTHENTICATE continuation lines
base64_line = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

NZ_NUMBER_MAX = 4294967295  # RFC 3501 §9: nz-number is a 32-bit unsigned non-zero value
NUMBER64_MAX = 9223372036854775807  # RFC 9051 §9: number64 (mod-sequence-value is 63 bits)
