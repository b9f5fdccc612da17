"""RFC 5321 §4.1.2 grammar (with RFC 6531 SMTPUTF8 extensions) as named regexes.

Lines are matched after UTF-8 decoding, so ``UTF8_NON_ASCII`` is any code point above
U+007F. The grammar always admits UTF-8; whether it is *allowed* (SMTPUTF8 in effect) is
the connection's decision, so it can answer 553 5.6.7 rather than a syntax error.
"""

from __future__ import annotations

import ipaddress
import re

UTF8_NON_ASCII = "\u0080-\U0010ffff"  # RFC 6531 §3.3 / RFC 6532 §3.1

# RFC 5321 §4.1.2
LET_DIG = "[A-Za-z0-9]"
LDH_STR = "[A-Za-z0-9-]*[A-Za-z0-9]"
# sub-domain = Let-dig [Ldh-str]  ;  RFC 6531: sub-domain =/ U-label
SUB_DOMAIN = (
    f"[A-Za-z0-9{UTF8_NON_ASCII}](?:[A-Za-z0-9{UTF8_NON_ASCII}-]*[A-Za-z0-9{UTF8_NON_ASCII}])?"
)
DOMAIN = rf"{SUB_DOMAIN}(?:\.{SUB_DOMAIN})*"
# address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
#                         General-address-literal ) "]"
# IPv6 and IPv4 forms are checked again with ``ipaddress`` (see valid_address_literal).
SNUM = "[0-9]{1,3}"
IPV4_ADDRESS_LITERAL = rf"{SNUM}(?:\.{SNUM}){{3}}"
IPV6_ADDRESS_LITERAL = "[Ii][Pp][Vv]6:[0-9A-Fa-f:.]+"
GENERAL_ADDRESS_LITERAL = rf"{LDH_STR}:[\x21-\x5a\x5e-\x7e]+"  # Standardized-tag ":" 1*dcontent
ADDRESS_LITERAL = (
    rf"\[(?:{IPV4_ADDRESS_LITERAL}|{IPV6_ADDRESS_LITERAL}|{GENERAL_ADDRESS_LITERAL})\]"
)

# atext (RFC 5322 §3.2.3)  ;  RFC 6531: atext =/ UTF8-non-ascii
ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{UTF8_NON_ASCII}-]"
ATOM = f"{ATEXT}+"
DOT_STRING = rf"{ATOM}(?:\.{ATOM})*"
# qtextSMTP = %d32-33 / %d35-91 / %d93-126 ; RFC 6531: qtextSMTP =/ UTF8-non-ascii
QTEXT_SMTP = rf"[\x20\x21\x23-\x5b\x5d-\x7e{UTF8_NON_ASCII}]"
QUOTED_PAIR_SMTP = r"\\[\x20-\x7e]"
QUOTED_STRING = rf'"(?:{QTEXT_SMTP}|{QUOTED_PAIR_SMTP})*"'
LOCAL_PART = rf"(?:{DOT_STRING}|{QUOTED_STRING})"
MAILBOX = rf"(?P<local>{LOCAL_PART})@(?P<domain>{DOMAIN}|{ADDRESS_LITERAL})"
AT_DOMAIN = f"@{DOMAIN}"
A_D_L = rf"{AT_DOMAIN}(?:,{AT_DOMAIN})*"  # source route, accepted and ignored (§4.1.2, §C)
PATH = rf"<(?:{A_D_L}:)?(?P<mailbox>{MAILBOX})>"

# esmtp-param = esmtp-keyword ["=" esmtp-value]
ESMTP_KEYWORD = "[A-Za-z0-9][A-Za-z0-9-]*"
# esmtp-value = 1*(%d33-60 / %d62-126) ; RFC 6531: esmtp-value =/ UTF8-non-ascii
ESMTP_VALUE = rf"[\x21-\x3c\x3e-\x7e{UTF8_NON_ASCII}]+"
ESMTP_PARAM = rf"(?P<keyword>{ESMTP_KEYWORD})(?:=(?P<value>{ESMTP_VALUE}))?"

# Reply to HELO/EHLO: Domain / address-literal (RFC 5321 §4.1.1.1)
HELO_NAME = rf"(?:{DOMAIN}|{ADDRESS_LITERAL})"

# xtext (RFC 3461 §4): xchar = "!".."~" except "+" and "=" ; hexchar = "+" 2HEXDIG (upper)
XTEXT = r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*"

# SASL (RFC 4954 §4): base64 or "=" for an empty initial response
SASL_MECH = "[A-Z0-9_-]{1,20}"

path_re = re.compile(PATH)
mailbox_re = re.compile(MAILBOX)
esmtp_param_re = re.compile(ESMTP_PARAM)
helo_name_re = re.compile(HELO_NAME)
domain_re = re.compile(DOMAIN)
xtext_re = re.compile(XTEXT)
xtext_hex_re = re.compile(r"\+([0-9A-F]{2})")
unitext_re = re.compile(r"\\x\{([0-9A-F]{2,6})\}")  # RFC 6533 §3 utf-8-addr-xtext
sasl_mech_re = re.compile(SASL_MECH, re.IGNORECASE)
bdat_re = re.compile(r"(?P<size>[0-9]{1,19})(?: +(?P<last>LAST))? *", re.IGNORECASE)
from_re = re.compile(r"FROM: ?", re.IGNORECASE)
to_re = re.compile(r"TO: ?", re.IGNORECASE)
postmaster_re = re.compile(r"<(?P<mailbox>postmaster)>", re.IGNORECASE)


def valid_address_literal(literal: str) -> bool:
    """``literal`` is "[...]" as matched by ADDRESS_LITERAL; check the address itself."""
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    if inner[:1].isdigit() and ":" not in inner:
        try:
            ipaddress.IPv4Address(inner)
        except ValueError:
            return False
    return True


def valid_domain_length(domain: str) -> bool:
    # RFC 5321 §4.5.3.1.2: 255 octets; labels 63 (RFC 1035 §2.3.4)
    if domain.startswith("["):
        return True
    if len(domain.encode()) > 255:
        return False
    return all(len(label.encode()) <= 63 for label in domain.split("."))
