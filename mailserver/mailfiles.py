"""Reading and writing mail in the files other software keeps it in: mbox and Maildir.

Pure functions (no store): the CLI importer and exporter feed what they yield to the ingest
path and write what the store holds.

- **mbox** is read with the stdlib ``mailbox`` module and written as *mboxrd*: a body line
  matching ``>*From `` gets one more ``>`` on export and loses one on import, so a round trip is
  exact. Flags travel in the ``Status`` / ``X-Status`` / ``X-Keywords`` headers (the mutt /
  Thunderbird / Dovecot convention); those headers, and Dovecot's ``X-UID`` / ``X-IMAP`` /
  ``X-IMAPbase`` bookkeeping, are removed from the stored message. The date of the
  ``From_`` line is the received date.
- **Maildir** (and Maildir++ subfolders ``.Sent``, ``.Lists.python`` → ``Sent``,
  ``Lists/python``): flags from the ``:2,`` info suffix (``S`` seen, ``R`` answered, ``F``
  flagged, ``D`` draft, ``T`` deleted, ``P`` forwarded, ``a``–``z`` Dovecot keywords from
  ``dovecot-keywords``); the received date is the earlier of the file's mtime (Dovecot keeps
  INTERNALDATE there) and the delivery time at the start of the file name (which survives a
  copy that did not preserve mtimes).

Messages are stored with CRLF line ends (the wire form IMAP serves); files get LF.
"""

from __future__ import annotations

import calendar
import email.utils
import mailbox
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mailserver.store.keywords import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, InvalidKeyword, \
    keyword_from_imap, keyword_to_imap
from protocols.imap import mutf7

FORWARDED = "$forwarded"


@dataclass(frozen=True, slots=True)
class MailFile:
    """One message read from a file: what ``Deliverer.append_to_mailbox`` needs."""

    raw: bytes  # CRLF line ends
    keywords: frozenset[str]
    received_at: int  # epoch seconds
    folder: str = ""  # Maildir++ folder as a mailbox path ("" = the top folder)


# --------------------------------------------------------------------------------------------
# Line ends and headers
# --------------------------------------------------------------------------------------------

_EOL = re.compile(rb"\r?\n")


def to_crlf(data: bytes) -> bytes:
    return _EOL.sub(b"\r\n", data)


def to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line end, rest starting at the blank line) for LF
    text. A message without a blank line is all header."""
    if data.startswith(b"\n"):
        return b"", data
    i = data.find(b"\n\n")
    if i < 0:
        return data, b""
    return data[: i + 1], data[i + 1:]


_FLAG_HEADERS = (b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase")


def take_flag_headers(header: bytes) -> tuple[bytes, dict[str, str]]:
    """Remove the mbox flag/bookkeeping headers (with continuation lines) from an LF header
    block; returns the rest and the removed values by lowercase name."""
    kept: list[bytes] = []
    found: dict[str, str] = {}
    dropping = False
    current: str | None = None
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if dropping:
                if current is not None:
                    found[current] += " " + line.strip().decode("latin-1")
                continue
            kept.append(line)
            continue
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in _FLAG_HEADERS:
            dropping = True
            current = name.strip().lower().decode()
            found[current] = value.strip().decode("latin-1")
            continue
        dropping = False
        current = None
        kept.append(line)
    return b"".join(kept), found


def keywords_from_mbox_headers(found: dict[str, str]) -> set[str]:
    kw: set[str] = set()
    status = found.get("status", "")
    xstatus = found.get("x-status", "")
    if "R" in status:
        kw.add(SEEN)
    for letter, keyword in (("A", ANSWERED), ("F", FLAGGED), ("T", DRAFT), ("D", DELETED)):
        if letter in xstatus:
            kw.add(keyword)
    for word in re.split(r"[\s,]+", found.get("x-keywords", "")):
        if word:
            try:
                kw.add(keyword_from_imap(word))
            except InvalidKeyword:
                pass
    return kw


def mbox_flag_headers(keywords: Iterable[str]) -> bytes:
    kw = set(keywords)
    out = b"Status: " + (b"RO" if SEEN in kw else b"O") + b"\n"
    xstatus = "".join(letter for letter, k in (("A", ANSWERED), ("F", FLAGGED), ("T", DRAFT),
                                               ("D", DELETED)) if k in kw)
    if xstatus:
        out += f"X-Status: {xstatus}\n".encode()
    others = sorted(kw - {SEEN, ANSWERED, FLAGGED, DRAFT, DELETED})
    if others:
        out += ("X-Keywords: " + " ".join(keyword_to_imap(k) for k in others) + "\n").encode()
    return out


# --------------------------------------------------------------------------------------------
# mbox
# --------------------------------------------------------------------------------------------

_ASCTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s+"
    r"(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s+(?:[A-Z]{3,4}\s+)?(\d{4})")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_FROM_QUOTED = re.compile(rb"^>(>*From )", re.MULTILINE)
_FROM_TO_QUOTE = re.compile(rb"^(>*From )", re.MULTILINE)


def parse_from_line_date(line: str) -> int | None:
    """Epoch seconds of the asctime date in an mbox ``From_`` line (taken as UTC)."""
    m = _ASCTIME.search(line)
    if not m:
        return None
    mon, day, hh, mm, ss, year = m.groups()
    try:
        return calendar.timegm((int(year), _MONTHS[mon], int(day), int(hh), int(mm),
                                int(ss or 0), 0, 0, 0))
    except (ValueError, OverflowError):
        return None


def _date_header(header: bytes) -> int | None:
    m = re.search(rb"^Date:[ \t]*(.*(?:\n[ \t].*)*)", header, re.MULTILINE | re.IGNORECASE)
    if not m:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(
            m.group(1).decode("latin-1").replace("\n", " ")).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def read_mbox(path: str) -> Iterator[MailFile]:
    """Messages of an mbox file in file order. Raises OSError for an unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not an mbox file")
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            data = box.get_bytes(key, from_=True)
            from_line, _, message = data.partition(b"\n")
            message = _FROM_QUOTED.sub(rb"\1", message)  # mboxrd unquoting
            header, body = split_header(message)
            header, found = take_flag_headers(header)
            received = (parse_from_line_date(from_line.decode("latin-1"))
                        or _date_header(header) or int(time.time()))
            yield MailFile(to_crlf(header + body), frozenset(keywords_from_mbox_headers(found)),
                           received)
    finally:
        box.close()


def _envelope_sender(header: bytes) -> str:
    m = re.search(rb"^Return-Path:[ \t]*<([^>\s]*)>", header, re.MULTILINE | re.IGNORECASE)
    if m and m.group(1):
        return m.group(1).decode("latin-1")
    return "MAILER-DAEMON"


def mbox_entry(raw: bytes, keywords: Iterable[str], received_at: int) -> bytes:
    """One mboxrd entry: ``From_`` line, flag headers, quoted body, blank separator line."""
    text = to_lf(raw)
    header, body = split_header(text)
    if not header.endswith(b"\n") and header:
        header += b"\n"
    stamp = time.asctime(time.gmtime(received_at))
    from_line = f"From {_envelope_sender(header)} {stamp}\n".encode()
    message = header + mbox_flag_headers(keywords) + (body if body else b"\n")
    message = _FROM_TO_QUOTE.sub(rb">\1", message)
    if not message.endswith(b"\n"):
        message += b"\n"
    return from_line + message + b"\n"


# --------------------------------------------------------------------------------------------
# Maildir
# --------------------------------------------------------------------------------------------

_MAILDIR_FLAGS = {"S": SEEN, "R": ANSWERED, "F": FLAGGED, "D": DRAFT, "T": DELETED,
                  "P": FORWARDED}


def decode_mutf7(name: str) -> str:
    """A Dovecot folder name in modified UTF-7 (RFC 3501 §5.1.3) → str; a name that is not
    valid modified UTF-7 (e.g. already UTF-8) is kept as it is."""
    try:
        return mutf7.decode(name.encode("ascii"))
    except (UnicodeEncodeError, mutf7.Mutf7Error):
        return name


def _is_maildir(path: str) -> bool:
    return all(os.path.isdir(os.path.join(path, d)) for d in ("cur", "new"))


def _dovecot_keywords(folder: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(os.path.join(folder, "dovecot-keywords"), encoding="utf-8") as f:
            for line in f:
                idx, _, name = line.strip().partition(" ")
                if idx.isdigit() and name and int(idx) < 26:
                    out[chr(ord("a") + int(idx))] = name
    except OSError:
        pass
    return out


def maildir_keywords(info: str, dovecot: dict[str, str] | None = None) -> set[str]:
    """Keywords of a Maildir info suffix ``2,FRS`` (``1,…`` experimental info is ignored)."""
    kw: set[str] = set()
    if not info.startswith("2,"):
        return kw
    for letter in info[2:]:
        if letter in _MAILDIR_FLAGS:
            kw.add(_MAILDIR_FLAGS[letter])
        elif dovecot and letter in dovecot:
            try:
                kw.add(keyword_from_imap(dovecot[letter]))
            except InvalidKeyword:
                pass
    return kw


def maildir_folders(root: str) -> list[tuple[str, str]]:
    """[(mailbox path, directory)]: the top folder ("") and its Maildir++ subfolders."""
    if not _is_maildir(root):
        raise FileNotFoundError(f"{root}: not a Maildir (no cur/ and new/)")
    folders = [("", root)]
    for name in sorted(os.listdir(root)):
        sub = os.path.join(root, name)
        if name.startswith(".") and name not in (".", "..") and len(name) > 1 \
                and _is_maildir(sub):
            folders.append(("/".join(decode_mutf7(p) for p in name[1:].split(".")), sub))
    return folders


def read_maildir_folder(folder: str, path: str = "") -> Iterator[MailFile]:
    """Messages of one Maildir folder, ordered by delivery time then name."""
    dovecot = _dovecot_keywords(folder)
    entries: list[tuple[int, str, str, str]] = []
    for sub in ("new", "cur"):
        directory = os.path.join(folder, sub)
        for name in os.listdir(directory):
            if name.startswith("."):
                continue
            full = os.path.join(directory, name)
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue  # moved by a concurrent MUA
            if not os.path.isfile(full):
                continue
            unique, info = name, ""
            for sep in (":", "!", ";"):
                if sep in name:
                    unique, _, info = name.partition(sep)
                    break
            received = int(st.st_mtime)
            stamp = unique.split(".", 1)[0]
            if stamp.isdigit() and 0 < int(stamp) < received:
                received = int(stamp)
            entries.append((received, unique, full, info if sub == "cur" else ""))
    entries.sort()
    for received, _unique, full, info in entries:
        with open(full, "rb") as f:
            raw = f.read()
        yield MailFile(to_crlf(raw), frozenset(maildir_keywords(info, dovecot)), received, path)


def read_maildir(root: str) -> Iterator[MailFile]:
    for path, directory in maildir_folders(root):
        yield from read_maildir_folder(directory, path)
