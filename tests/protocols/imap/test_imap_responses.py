"""Response encoders: exact bytes."""

from __future__ import annotations

import datetime

import pytest

from protocols.imap import SequenceSet, responses as r
from protocols.imap import _writers as w
from protocols.imap.responses import Literal, Raw, code

PDT = datetime.timezone(-datetime.timedelta(hours=7))


def test_status_responses_and_codes():
    assert r.ok("a1", "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    assert r.no("a2", "no such mailbox", code.TRYCREATE) == b"a2 NO [TRYCREATE] no such mailbox\r\n"
    assert r.bad(None, "junk") == b"* BAD junk\r\n"
    assert r.bad("x", "line\r\nbreak") == b"x BAD line  break\r\n"
    assert (
        r.untagged_ok("UIDs valid", code.uidvalidity(3857529045))
        == b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert (
        r.untagged_ok("Predicted next UID", code.uidnext(4392))
        == b"* OK [UIDNEXT 4392] Predicted next UID\r\n"
    )
    assert (
        r.untagged_ok("Limited", code.permanentflags(["\\Deleted", "\\Seen", "\\*"]))
        == b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"
    )
    assert (
        r.ok("A142", "SELECT completed", code.READ_WRITE)
        == b"A142 OK [READ-WRITE] SELECT completed\r\n"
    )
    assert (
        r.untagged_ok("x", code.highestmodseq(715194045007))
        == b"* OK [HIGHESTMODSEQ 715194045007] x\r\n"
    )
    assert r.untagged_ok("x", code.NOMODSEQ) == b"* OK [NOMODSEQ] x\r\n"
    assert (
        r.ok("A003", "APPEND completed", code.appenduid(38505, "3955"))
        == b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"
    )
    assert (
        r.ok("A004", "Done", code.copyuid(38505, SequenceSet.of(304, (319, 320)), "3956:3958"))
        == b"A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n"
    )
    assert r.ok("d105", "x", code.modified("7,9")) == b"d105 OK [MODIFIED 7,9] x\r\n"
    assert r.untagged_ok("x", code.CLOSED) == b"* OK [CLOSED] x\r\n"
    assert r.no("a", "x", code.badcharset()) == b"a NO [BADCHARSET (UTF-8 US-ASCII)] x\r\n"
    for c in (
        code.ALERT,
        code.TOOBIG,
        code.LIMIT,
        code.NONEXISTENT,
        code.ALREADYEXISTS,
        code.AUTHENTICATIONFAILED,
        code.CANNOT,
        code.INUSE,
        code.OVERQUOTA,
        code.SERVERBUG,
        code.UNKNOWN_CTE,
    ):
        assert r.no("t", "x", c) == b"t NO [" + c.encode() + b"] x\r\n"
    assert r.bye() == b"* BYE Logging out\r\n"
    assert r.preauth("hi") == b"* PREAUTH hi\r\n"
    assert (
        r.greeting(["IMAP4rev1", "IMAP4rev2"], "ready")
        == b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2] ready\r\n"
    )


def test_continuations():
    assert r.continuation() == b"+ Ready\r\n"
    assert r.continuation("idling") == b"+ idling\r\n"
    assert r.continuation(b"\x00challenge") == b"+ AGNoYWxsZW5nZQ==\r\n"
    assert r.continuation(b"") == b"+ \r\n"


def test_untagged_data():
    assert (
        r.capability(["IMAP4rev2", "STARTTLS", "AUTH=GSSAPI"])
        == b"* CAPABILITY IMAP4rev2 STARTTLS AUTH=GSSAPI\r\n"
    )
    assert r.enabled(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert r.exists(23) == b"* 23 EXISTS\r\n"
    assert r.recent(1) == b"* 1 RECENT\r\n"
    assert r.expunge(3) == b"* 3 EXPUNGE\r\n"
    assert r.vanished("405,407,410,425") == b"* VANISHED 405,407,410,425\r\n"
    assert r.vanished(SequenceSet.of((41, 94)), earlier=True) == b"* VANISHED (EARLIER) 41:94\r\n"
    assert r.flags(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"]) == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    )
    assert r.search([2, 3, 6]) == b"* SEARCH 2 3 6\r\n"
    assert r.search([]) == b"* SEARCH\r\n"
    assert r.search([2, 5, 6, 7, 11, 12, 18, 19, 20, 23], modseq=917162500) == (
        b"* SEARCH 2 5 6 7 11 12 18 19 20 23 (MODSEQ 917162500)\r\n"
    )
    assert r.sort([2, 84, 882]) == b"* SORT 2 84 882\r\n"
    assert r.thread([2, [3, 6, [4, 23], [44, 7, 96]]]) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert r.thread([[166, [167], [168]]]) == b"* THREAD (166 (167)(168))\r\n"
    assert r.thread([]) == b"* THREAD\r\n"
    assert r.esearch("A285", min=7, max=3800) == b'* ESEARCH (TAG "A285") MIN 7 MAX 3800\r\n'
    assert r.esearch("A284", uid=True, count=0) == b'* ESEARCH (TAG "A284") UID COUNT 0\r\n'
    assert r.esearch("a", all=SequenceSet.of((4, 5), 7), count=3, modseq=5) == (
        b'* ESEARCH (TAG "a") ALL 4:5,7 COUNT 3 MODSEQ 5\r\n'
    )
    assert r.namespace([("", "/")], [("~", "/")], [("#shared/", "/"), ("#public/", "/")]) == (
        b'* NAMESPACE (("" "/")) (("~" "/")) (("#shared/" "/")("#public/" "/"))\r\n'
    )
    assert r.namespace([("", None)], None, None) == b'* NAMESPACE (("" NIL)) NIL NIL\r\n'
    assert r.id_response({"name": "Cyrus", "version": "1.5", "support-url": None}) == (
        b'* ID ("name" "Cyrus" "version" "1.5" "support-url" NIL)\r\n'
    )
    assert r.id_response(None) == b"* ID NIL\r\n"
    assert r.quota("", [("STORAGE", 10, 512)]) == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert r.quotaroot("INBOX", [""]) == b'* QUOTAROOT INBOX ""\r\n'
    assert r.quotaroot("comp.mail.mime", []) == b"* QUOTAROOT comp.mail.mime\r\n"


def test_list_and_status():
    assert (
        r.list_response(["\\Noselect"], "/", "~/Mail/foo")
        == b'* LIST (\\Noselect) "/" ~/Mail/foo\r\n'
    )
    assert r.list_response([], None, "INBOX") == b"* LIST () NIL INBOX\r\n"
    assert (
        r.list_response(["\\HasNoChildren"], ".", "Entwürfe")
        == b'* LIST (\\HasNoChildren) "." Entw&APw-rfe\r\n'
    )
    assert r.list_response([], ".", "Entwürfe", utf8=True) == b'* LIST () "." "Entw\xc3\xbcrfe"\r\n'
    assert r.list_response([], "/", "with space") == b'* LIST () "/" "with space"\r\n'
    assert r.list_response([], "/", "nil") == b'* LIST () "/" "nil"\r\n'
    assert r.list_response(["\\Subscribed"], "/", "Foo", child_info=["SUBSCRIBED"]) == (
        b'* LIST (\\Subscribed) "/" Foo ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert r.list_response([], "/", "NewName", old_name="OldName") == (
        b'* LIST () "/" NewName ("OLDNAME" (OldName))\r\n'
    )
    assert (
        r.lsub_response([], "/", "#news.comp.mail.mime")
        == b'* LSUB () "/" #news.comp.mail.mime\r\n'
    )
    assert r.status("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292}) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )
    assert r.status("INBOX", [("MAILBOXID", "F2212ea87-6097"), ("SIZE", 5)]) == (
        b"* STATUS INBOX (MAILBOXID (F2212ea87-6097) SIZE 5)\r\n"
    )


def test_fetch_responses():
    when = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT)
    assert r.fetch(
        12,
        [
            ("FLAGS", r.fetch_flags(["\\Seen"])),
            ("INTERNALDATE", r.internaldate(when)),
            ("RFC822.SIZE", 4286),
            ("UID", 7),
        ],
    ) == (
        b'* 12 FETCH (FLAGS (\\Seen) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 4286 UID 7)\r\n'
    )
    assert r.fetch(1, [("BODY[HEADER]<0>", b"Subject: x\r\n\r\n"), ("MODSEQ", (12121231000,))]) == (
        b"* 1 FETCH (BODY[HEADER]<0> {14}\r\nSubject: x\r\n\r\n MODSEQ (12121231000))\r\n"
    )
    assert r.fetch(
        2, {"BINARY[1]": b"a\x00b", "BODY[1]": None, "EMAILID": Raw(b"(M6d99ac3275bb4e)")}
    ) == (b"* 2 FETCH (BINARY[1] ~{3}\r\na\x00b BODY[1] NIL EMAILID (M6d99ac3275bb4e))\r\n")
    assert r.fetch(3, [("PREVIEW", "Hallo Welt"), ("X", Literal(b"x"))]) == (
        b'* 3 FETCH (PREVIEW "Hallo Welt" X {1}\r\nx)\r\n'
    )


def test_string_choice():
    assert w.string("plain") == b'"plain"'
    assert w.string('a "q" \\') == b'"a \\"q\\" \\\\"'
    assert w.string("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert w.string("ümlaut") == b"{7}\r\n\xc3\xbcmlaut"
    assert w.string("ümlaut", utf8=True) == b'"\xc3\xbcmlaut"'
    assert w.string(b"\xff", utf8=True) == b"{1}\r\n\xff"
    assert w.string('"' * 20) == b"{20}\r\n" + b'"' * 20
    assert w.string("x" * 5000).startswith(b"{5000}\r\n")
    assert w.nstring(None) == b"NIL"
    assert w.astring("atom") == b"atom" and w.astring("NIL") == b'"NIL"' and w.astring("") == b'""'
    assert w.astring("a(b") == b'"a(b"'
    assert w.value([1, None, "x", [Raw(b"A")]]) == b'(1 NIL "x" (A))'
    with pytest.raises(TypeError):
        w.value(True)


@pytest.mark.parametrize(
    "when,text",
    [
        (datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=PDT), b'"17-Jul-1996 02:44:25 -0700"'),
        (
            datetime.datetime(2024, 2, 1, 0, 0, 0, tzinfo=datetime.timezone.utc),
            b'" 1-Feb-2024 00:00:00 +0000"',
        ),
        (
            datetime.datetime(
                2024,
                2,
                1,
                0,
                0,
                0,
                tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
            ),
            b'" 1-Feb-2024 00:00:00 +0530"',
        ),
        (datetime.datetime(2024, 12, 31, 23, 59, 59), b'"31-Dec-2024 23:59:59 +0000"'),
    ],
)
def test_date_time(when, text):
    assert w.date_time(when) == text
    from imap_driver import one
    from protocols.imap import State

    parsed = (
        one(b"a APPEND INBOX " + text + b" {1}\r\nx\r\n", state=State.AUTHENTICATED)
        .messages[0]
        .internal_date
    )
    assert parsed == (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc))
