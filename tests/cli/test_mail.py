"""``mailserver import|export``: mbox and Maildir through the ingest path, round trips."""

from __future__ import annotations

import json
import mailbox
import os
import time
from pathlib import Path

import pytest

from clihelpers import assert_user_error, run
from mailserver import mailfiles

MSG1 = (b"From: Ann <ann@example.org>\nTo: demo@example.test\nSubject: first\n"
        b"Date: Mon, 02 Nov 2026 10:00:00 +0000\nMessage-ID: <1@example.org>\n\n"
        b"From the start of a line\n>From quoted already\nbye\n")
MSG2 = (b"From: Bob <bob@example.org>\nSubject: second\nStatus: RO\nX-Status: AF\n"
        b"X-Keywords: $Label1 Work\n\nsecond body\n")


def write_mbox(path: Path) -> None:
    path.write_bytes(
        b"From ann@example.org Mon Nov  2 10:00:00 2026\n" + MSG1.replace(
            b"\nFrom the start", b"\n>From the start").replace(
            b"\n>From quoted", b"\n>>From quoted") + b"\n"
        + b"From bob@example.org Tue Nov  3 11:30:00 2026\n" + MSG2 + b"\n")


def make_maildir(root: Path) -> None:
    for folder in (root, root / ".Sent", root / ".Lists.python", root / ".Caf&AOk-"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    files = {
        root / "cur" / "1700000000.M1P1.host:2,FS": b"Subject: seen flagged\n\none\n",
        root / "new" / "1700000100.M2P1.host": b"Subject: new\n\ntwo\n",
        root / ".Sent" / "cur" / "1700000200.M3P1.host:2,S": b"Subject: sent\n\nthree\n",
        root / ".Lists.python" / "cur" / "1700000300.M4P1.host:2,RSab":
            b"Subject: list\n\nfour\n",
        root / ".Caf&AOk-" / "cur" / "1700000400.M5P1.host:2,T": b"Subject: cafe\n\nfive\n",
    }
    for path, data in files.items():
        path.write_bytes(data)
    # a copy that did not keep mtimes: the file name's time wins (the earlier one)
    os.utime(root / "new" / "1700000100.M2P1.host", (time.time(), time.time()))
    # Dovecot kept INTERNALDATE in the mtime, earlier than the name's delivery time
    os.utime(root / ".Sent" / "cur" / "1700000200.M3P1.host:2,S", (1600000000, 1600000000))
    (root / ".Lists.python" / "dovecot-keywords").write_text("0 $Junk\n1 Work\n")


def read_export(path: Path) -> list[tuple[bytes, set[str], str]]:
    box = mailbox.mbox(str(path), create=False)
    out = []
    for key in box.iterkeys():
        msg = box.get_message(key)
        out.append((box.get_bytes(key), set(msg.get_flags()), msg.get_from()))
    return out


def test_mbox_import_export_round_trip(setup, tmp_path, cli):
    c = ("-c", str(setup))
    assert cli(*c, "user", "add", "mbox@example.test", "--password", "p").rc == 0
    src = tmp_path / "in.mbox"
    write_mbox(src)
    r = run(*c, "import", "mbox@example.test", "mbox", str(src), "--mailbox", "Archive/2026")
    assert r.rc == 0, r.err
    assert "2 message(s) imported" in r.out

    out = tmp_path / "out.mbox"
    r = cli(*c, "export", "mbox@example.test", "mbox", str(out), "--mailbox", "Archive/2026")
    assert r.rc == 0, r.err
    text = out.read_bytes()
    # mboxrd quoting restored exactly; flags as Status/X-Status/X-Keywords
    assert b"\n>From the start of a line\n>>From quoted already\n" in text
    assert text.startswith(b"From ann@example.org Mon Nov  2 10:00:00 2026\n") or \
        text.startswith(b"From MAILER-DAEMON Mon Nov  2 10:00:00 2026\n")
    exported = read_export(out)
    assert [e[1] for e in exported] == [{"O"}, {"R", "O", "A", "F"}]
    assert b"X-Keywords: $label1 work" in exported[1][0]

    # export → import → export is byte-identical (the store kept the messages unchanged)
    assert cli(*c, "user", "add", "mbox2@example.test", "--password", "p").rc == 0
    assert cli(*c, "import", "mbox2@example.test", "mbox", str(out)).rc == 0
    out2 = tmp_path / "out2.mbox"
    assert cli(*c, "export", "mbox2@example.test", "mbox", str(out2)).rc == 0
    assert out2.read_bytes() == text

    # the stored message is the original, in CRLF, without the mbox bookkeeping headers
    stored = list(mailfiles.read_mbox(str(out)))
    assert stored[0].raw == MSG1.replace(b"\n", b"\r\n")
    assert b"Status" not in stored[1].raw and stored[1].raw.startswith(b"From: Bob")
    assert stored[1].keywords == {"$seen", "$answered", "$flagged", "$label1", "work"}
    assert stored[0].received_at == 1793613600  # the From_ line date, UTC

    assert_user_error(cli(*c, "export", "mbox@example.test", "mbox", str(out)), "exists")
    used = {u["login"]: u["used_bytes"] for u in json.loads(cli(*c, "user", "list",
                                                                "--json").out)}
    assert used["mbox@example.test"] == len(stored[0].raw) + len(stored[1].raw)


def test_maildir_import_keeps_flags_dates_and_folders(setup, tmp_path, cli):
    c = ("-c", str(setup))
    assert cli(*c, "user", "add", "md@example.test", "--password", "p").rc == 0
    root = tmp_path / "Maildir"
    make_maildir(root)
    r = cli(*c, "import", "md@example.test", "maildir", str(root))
    assert r.rc == 0, r.err
    assert "5 message(s) imported" in r.out

    def export(mailbox_name: str) -> list[tuple[bytes, set[str], str]]:
        path = tmp_path / (mailbox_name.replace("/", "_") + ".mbox")
        assert cli(*c, "export", "md@example.test", "mbox", str(path), "--mailbox",
                   mailbox_name, "--force").rc == 0
        return read_export(path)

    inbox = export("INBOX")
    assert [m[0].split(b"\n")[0] for m in inbox] == [b"Subject: seen flagged", b"Subject: new"]
    assert inbox[0][1] == {"R", "O", "F"} and inbox[1][1] == {"O"}
    assert inbox[0][2].endswith("Tue Nov 14 22:13:20 2023")  # 1700000000
    assert inbox[1][2].endswith("Tue Nov 14 22:15:00 2023")  # name time beats a later mtime
    sent = export("Sent")
    assert sent[0][2].endswith("Sun Sep 13 12:26:40 2020")  # mtime beats a later name time
    lists = export("Lists/python")
    assert lists[0][1] == {"R", "O", "A"}
    assert b"X-Keywords: $junk work" in lists[0][0]
    assert export("Café")[0][1] == {"O", "D"}

    # import is not idempotent by design (like an IMAP APPEND); a second run adds copies
    assert cli(*c, "import", "md@example.test", "maildir", str(root / ".Sent"),
               "--mailbox", "Sent").rc == 0
    assert len(export("Sent")) == 2


def test_fsck_is_clean_after_import(setup, tmp_path, cli):
    pytest.importorskip("mailserver.store.fsck", reason="fsck not written yet")
    c = ("-c", str(setup))
    src = tmp_path / "in.mbox"
    write_mbox(src)
    assert cli(*c, "import", "demo@example.test", "mbox", str(src)).rc == 0
    r = cli(*c, "fsck")
    assert r.rc == 0, r.out + r.err
    r = cli(*c, "fsck", "--json")
    assert r.rc == 0
    json.loads(r.out)


def test_quota_stops_an_import(setup, tmp_path, cli):
    c = ("-c", str(setup))
    assert cli(*c, "user", "add", "small@example.test", "--password", "p", "--quota",
               "100").rc == 0
    src = tmp_path / "in.mbox"
    write_mbox(src)
    assert_user_error(cli(*c, "import", "small@example.test", "mbox", str(src)),
                      "quota of small@example.test exceeded after 0 message(s)")


# -- pure parsing ----------------------------------------------------------------------------

def test_mbox_entry_quotes_and_flags():
    raw = b"Return-Path: <a@b>\r\nSubject: x\r\n\r\nFrom here\r\n>From there\r\nend"
    entry = mailfiles.mbox_entry(raw, {"$seen", "$draft", "custom"}, 0)
    assert entry == (b"From a@b Thu Jan  1 00:00:00 1970\nReturn-Path: <a@b>\nSubject: x\n"
                     b"Status: RO\nX-Status: T\nX-Keywords: custom\n\n>From here\n"
                     b">>From there\nend\n\n")


def test_take_flag_headers_with_continuations():
    header = b"Subject: a\nX-Keywords: one\n two\nX-UID: 5\nTo: b\n  continued\n"
    rest, found = mailfiles.take_flag_headers(header)
    assert rest == b"Subject: a\nTo: b\n  continued\n"
    assert found == {"x-keywords": "one two", "x-uid": "5"}
    assert mailfiles.keywords_from_mbox_headers(found) == {"one", "two"}


def test_maildir_info_and_names():
    assert mailfiles.maildir_keywords("2,DFPRST") == {
        "$draft", "$flagged", "$forwarded", "$answered", "$seen", "$deleted"}
    assert mailfiles.maildir_keywords("2,Sa", {"a": "$Junk"}) == {"$seen", "$junk"}
    assert mailfiles.maildir_keywords("1,whatever") == set()
    assert mailfiles.decode_mutf7("Caf&AOk-") == "Café"
    assert mailfiles.decode_mutf7("A&-B") == "A&B"
    assert mailfiles.decode_mutf7("&Jjo-!") == "☺!"
    assert mailfiles.decode_mutf7("bad&@@-") == "bad&@@-"
    assert mailfiles.parse_from_line_date("From x Sat Jan  3 01:05:34 1996") == 820631134
    assert mailfiles.parse_from_line_date("From x garbage") is None
