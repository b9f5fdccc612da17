"""Header fields: finding the header block, unfolding, and decoding the values we keep.

Owns everything that turns header bytes into values: the byte-level header block scanner
(``find_header_end``, ``split_header_fields``), RFC 2047 encoded-words (``decode_rfc2047``),
raw 8-bit header text (UTF-8, latin-1 fallback), RFC 5322 address lists (``parse_addresses``),
message ids (``parse_msg_ids``), ``Date:`` (``parse_date``), MIME parameters with RFC 2231
(``parse_params``) and the RFC 5256 base subject (``base_subject``). Nothing here raises on
malformed input.
"""

from __future__ import annotations

import binascii
import codecs
import re
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_to_bytes

from mailserver.message.model import Address

# ---------------------------------------------------------------------------------------------
# header block

# RFC 5322 §2.2: field-name = 1*ftext (printable US-ASCII except ":"); obsolete WSP before ":"
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")


def find_header_end(raw: bytes, start: int, end: int, allow_from_line: bool = False) -> int:
    """Offset just past the blank line that ends the header block in ``raw[start:end]``.

    Returns ``start`` when the region does not begin with a header field (a MIME part with
    no headers and no blank line), and ``end`` when no blank line follows the headers.
    A region that begins with an empty line has that line as its (empty) header block.
    """
    if start >= end:
        return start
    c = raw[start]
    if c == 10:  # "\n"
        return start + 1
    if c == 13 and start + 1 < end and raw[start + 1] == 10:
        return start + 2
    if not _FIELD_START.match(raw, start, end):
        # mbox "From " line in front of a message's headers is tolerated (it is skipped)
        if not (allow_from_line and raw.startswith(b"From ", start)):
            return start
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, crlf + 1 if crlf >= 0 else end)
    if lf >= 0:
        return lf + 2
    if crlf >= 0:
        return crlf + 3
    return end


def split_header_fields(block: bytes) -> list[tuple[str, bytes]]:
    """Split a header block into (lowercase name, unfolded raw value) in order.

    RFC 5322 §2.2.3: unfolding removes the CRLF before WSP, keeping the WSP. Lines that are
    neither a field nor a continuation are skipped.
    """
    fields: list[tuple[str, bytes]] = []
    name: str | None = None
    parts: list[bytes] = []
    for line in block.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if not line:
            continue
        if line[0] in (32, 9):
            if name is not None:
                parts.append(line)
            continue
        if name is not None:
            fields.append((name, parts[0] if len(parts) == 1 else b"".join(parts)))
            name = None
        i = line.find(b":")
        if i <= 0:
            continue
        nm = line[:i].rstrip(b" \t")
        if not nm or b" " in nm or b"\t" in nm:
            continue
        name = nm.decode("latin-1").lower()
        parts = [line[i + 1 :]]
    if name is not None:
        fields.append((name, parts[0] if len(parts) == 1 else b"".join(parts)))
    return fields


def header_text(value: bytes) -> str:
    """Raw header bytes as text: UTF-8 (RFC 6532), latin-1 when that fails. Stripped."""
    value = value.strip()
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


# ---------------------------------------------------------------------------------------------
# charsets

_CHARSET_ALIASES = {
    # WHATWG practice: labels that senders use for supersets
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "utf-8",  # mislabelled 8-bit text is common; utf-8 is a superset of ascii
    "ascii": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "unicode-1-1-utf-7": "utf-7",
}
_UNKNOWN = ("", "unknown", "unknown-8bit", "x-unknown", "default", "charset", "x-user-defined")


def _codec(charset: str | None) -> str | None:
    """A Python text codec for a MIME charset label, or None when unknown."""
    if not charset:
        return None
    cs = charset.strip().strip("\"'").lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if cs in _UNKNOWN:
        return None
    try:
        info = codecs.lookup(cs)
    except (LookupError, ValueError):
        return None
    # bytes-to-bytes codecs (base64, zlib, ...) are not charsets
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None, fallback: str = "cp1252") -> str:
    """Decode text in a declared charset; unknown or wrong charsets fall back to UTF-8, then
    ``fallback``. Never raises."""
    codec = _codec(charset)
    if codec is not None and codec != "utf-8":
        try:
            return data.decode(codec, "replace")
        except Exception:  # noqa: BLE001 - some codecs raise odd errors on garbage
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode(fallback, "replace")


# ---------------------------------------------------------------------------------------------
# RFC 2047 encoded-words

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def b64decode_lenient(data: bytes) -> bytes:
    """base64 that tolerates junk characters and missing or extra padding."""
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    clean = _B64_JUNK.sub(b"", data)
    cut = len(clean) % 4
    if cut == 1:
        clean = clean[:-1]
    elif cut:
        clean += b"=" * (4 - cut)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):
        return b""


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded-words in a header value (already unfolded, as text).

    §6.2: whitespace between adjacent encoded-words is dropped; adjacent words in the same
    charset are joined as bytes first, so a multibyte character split across words survives.
    Unknown charsets decode as UTF-8 with a latin-1 fallback.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []  # bytes of adjacent encoded-words in pending_cs
    pending_cs = ""
    pos = 0

    def flush() -> None:
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_cs, "latin-1"))
            pending.clear()

    for m in _ENCODED_WORD.finditer(value):
        between = value[pos : m.start()]
        if between and (not pending or between.strip()):
            flush()
            out.append(between)
        cs = m.group(1).split("*", 1)[0]  # RFC 2231 §5: charset*language
        text = m.group(3).encode("utf-8", "replace")
        if m.group(2) in "bB":
            data = b64decode_lenient(text)
        else:
            data = binascii.a2b_qp(text, header=True)
        if pending and cs.lower() != pending_cs.lower():
            flush()
        pending_cs = cs
        pending.append(data)
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# addresses (RFC 5322 §3.4)

_WS = re.compile(r"\s+")
_ATOM = re.compile(r'[^\s"(<>,;:]+')
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def _scan_quoted(s: str, i: int) -> tuple[str, int]:
    """Quoted string starting at s[i] == '"'; returns (raw inner text, index after)."""
    j = i + 1
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return s[i + 1 : j], j + 1
        j += 1
    return s[i + 1 :], n  # unterminated: to the end


def _scan_comment(s: str, i: int) -> tuple[str, int]:
    """Comment starting at s[i] == '('; nests (RFC 5322 §3.2.2)."""
    depth = 0
    j = i
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j], j + 1
        elif c == '"' and depth == 0:
            break
        j += 1
    return s[i + 1 : j], j


def _tokens(s: str) -> list[tuple[str, str]]:
    """Tokens: ("w", atom) ("q", quoted) ("c", comment) ("a", angle-addr) ("s", ",;:")."""
    toks: list[tuple[str, str]] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c.isspace():  # the same set as \s in _ATOM
            i += 1
        elif c == '"':
            text, i = _scan_quoted(s, i)
            toks.append(("q", _QUOTED_PAIR.sub(r"\1", text)))
        elif c == "(":
            text, i = _scan_comment(s, i)
            toks.append(("c", _QUOTED_PAIR.sub(r"\1", text)))
        elif c == "<":
            j = s.find(">", i + 1)
            if j < 0:
                j = n
            toks.append(("a", s[i + 1 : j]))
            i = j + 1
        elif c in ",;:":
            toks.append(("s", c))
            i += 1
        elif c == ">":
            i += 1
        else:
            m = _ATOM.match(s, i)
            if m is None:  # cannot happen: c is neither space nor special
                i += 1
                continue
            toks.append(("w", m.group()))
            i = m.end()
    return toks


def _clean_name(name: str) -> str:
    return _WS.sub(" ", decode_rfc2047(name)).strip()


def _mailbox(toks: list[tuple[str, str]]) -> Address | None:
    angle = next((i for i, t in enumerate(toks) if t[0] == "a"), -1)
    if angle >= 0:
        addr = _WS.sub("", toks[angle][1])
        if addr.startswith("@") and ":" in addr:  # RFC 5322 §4.4 obs-route
            addr = addr.split(":", 1)[1]
        words = [t[1] for t in toks[:angle] if t[0] in "wq"]
        if words:
            name = " ".join(words)
        else:
            comments = [t[1] for t in toks if t[0] == "c"]
            name = " ".join(comments)
    else:
        words = [t for t in toks if t[0] in "wq"]
        comments = [t[1] for t in toks if t[0] == "c"]
        joined = "".join(f'"{t[1]}"' if t[0] == "q" else t[1] for t in words)
        has_at = any("@" in t[1] for t in words if t[0] == "w")
        if has_at or (len(words) == 1 and words[0][0] == "w"):
            addr = joined
            name = comments[-1] if comments else ""  # "a@b (Name)"
        else:  # a phrase without an address: keep it as a name
            addr = ""
            name = " ".join(t[1] for t in words)
    name = _clean_name(name)
    if not addr and not name:
        return None
    return Address(name, addr)


def parse_addresses(value: str) -> tuple[Address, ...]:
    """Parse an address-list. Groups are flattened: members are kept and the group name is
    dropped (as JMAP ``asAddresses``, RFC 8621 §4.1.2.3); an empty group yields nothing."""
    out: list[Address] = []
    current: list[tuple[str, str]] = []
    in_group = False

    def flush() -> None:
        if current:
            a = _mailbox(current)
            if a is not None:
                out.append(a)
            current.clear()

    has_addr = False  # current holds an angle-addr or an "@"
    for tok in _tokens(value):
        kind, text = tok
        if kind == "s":
            if text == ",":
                flush()
                has_addr = False
            elif text == ":":
                if not in_group and not has_addr:
                    current.clear()  # group display name, RFC 5322 §3.4 group
                    in_group = True
                else:
                    current.append(("w", ":"))
            else:  # ";"
                flush()
                has_addr = False
                in_group = False
        else:
            current.append(tok)
            if kind == "a" or (kind == "w" and "@" in text):
                has_addr = True
    flush()
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# message ids, dates

_MSGID = re.compile(r"<([^<>]*)>")


def parse_msg_ids(value: str) -> tuple[str, ...]:
    """All ``<...>`` ids without brackets and whitespace; bare words when there are none."""
    ids = [_WS.sub("", m) for m in _MSGID.findall(value)]
    ids = [i for i in ids if i]
    if ids or "<" in value:
        return tuple(ids)
    return tuple(w for w in re.split(r"[\s,]+", value) if w)


def parse_date(value: str) -> int | None:
    """RFC 5322 §3.3 date-time to epoch seconds; None when unparseable. No zone = UTC."""
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value)
        if dt.tzinfo is None:
            from datetime import timezone

            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp())
    except Exception:  # noqa: BLE001 - email.utils raises TypeError/ValueError/OverflowError
        return None


# ---------------------------------------------------------------------------------------------
# MIME parameters (RFC 2045 §5.1, RFC 2231)

_EXT_NAME = re.compile(r"^(.+?)\*(?:(\d+)(\*)?)?$")


def _split_semicolons(value: str) -> list[str]:
    out: list[str] = []
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            i = _scan_quoted(value, i)[1]
            continue
        if c == ";":
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    return out


def _param_value(v: str) -> str:
    v = v.strip()
    if v.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", _scan_quoted(v, 0)[0])
    if "(" in v:  # RFC 2045 §5.1 allows comments after a token
        v = v.split("(", 1)[0].rstrip()
    return v


def parse_params(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split ``type/subtype; a=b; ...`` into the lowercased main value and its parameters.

    Parameter names are lowercased; RFC 2231 extended values (``name*=charset'lang'%xx``) and
    continuations (``name*0*=``, ``name*1=``) are joined and decoded and win over a plain
    parameter of the same name; RFC 2047 encoded-words in ``name``/``filename`` (common in the
    wild, though not allowed there) are decoded. First occurrence wins.
    """
    pieces = _split_semicolons(value)
    main = pieces[0].strip().lower()
    order: list[str] = []
    plain: dict[str, str] = {}
    ext: dict[str, dict[int, tuple[int, bool, str]]] = {}  # name → index → segment
    for piece in pieces[1:]:
        if "=" not in piece:
            continue
        raw_name, raw_value = piece.split("=", 1)
        name = raw_name.strip().lower()
        if not name:
            continue
        val = _param_value(raw_value)
        m = _EXT_NAME.match(name)
        if m:
            base = m.group(1)
            if m.group(2) is None:
                seg = (0, True, val)  # name*=
            else:
                try:
                    seg = (int(m.group(2)), m.group(3) is not None, val)
                except ValueError:
                    continue
            if base not in order:
                order.append(base)
            ext.setdefault(base, {}).setdefault(seg[0], seg)
        else:
            if name not in order:
                order.append(name)
            plain.setdefault(name, val)
    params: list[tuple[str, str]] = []
    for name in order:
        if name in ext:
            val = _join_2231(sorted(ext[name].values()))
        else:
            val = plain[name]
        if name in ("name", "filename") and "=?" in val:
            val = decode_rfc2047(val)
        params.append((name, val))
    return main, tuple(params)


def _join_2231(segs: list[tuple[int, bool, str]]) -> str:
    charset = ""
    data: list[bytes] = []
    for i, (_, encoded, val) in enumerate(segs):
        if encoded:
            if i == 0 and val.count("'") >= 2:
                charset, _lang, val = val.split("'", 2)
            data.append(unquote_to_bytes(val))
        else:
            data.append(val.encode("utf-8", "surrogateescape"))
    return decode_bytes(b"".join(data), charset, "latin-1")


# ---------------------------------------------------------------------------------------------
# RFC 5256 §2.1 base subject

_SUBJ_LEADER = re.compile(r"(?:\[[^\[\]]*\] *)*(?:re|fwd?) *(?:\[[^\[\]]*\] *)?: *| +", re.I)
_BASE_SUBJECT_MAX = 1024
_SUBJ_BLOB = re.compile(r"\[[^\[\]]*\] *")


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1 base subject of a decoded subject, case-folded so that equal base
    subjects compare equal (threading, SORT SUBJECT use i;unicode-casemap)."""
    # (1); a pathological subject is cut so the prefix loop below stays cheap
    s = _WS.sub(" ", subject).strip()[:_BASE_SUBJECT_MAX]
    for _ in range(1000):  # bounded: each round shortens s
        while True:  # (2) subj-trailer = "(fwd)" / WSP
            s = s.rstrip()
            if s[-5:].lower() != "(fwd)":
                break
            s = s[:-5]
        while True:  # (3)-(5)
            changed = False
            m = _SUBJ_LEADER.match(s)
            if m and m.end():
                s = s[m.end() :]
                changed = True
            m = _SUBJ_BLOB.match(s)
            if m and s[m.end() :].strip():
                s = s[m.end() :]
                changed = True
            if not changed:
                break
        if s[:5].lower() == "[fwd:" and s.endswith("]"):  # (6)
            s = s[5:-1]
            continue
        break
    return s.strip().casefold()
