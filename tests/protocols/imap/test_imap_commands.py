"""Every command form: bytes in, typed command events out."""

from __future__ import annotations

import datetime

import pytest
from imap_driver import one

from protocols.imap import (
    BadCommand,
    FetchAttribute,
    SearchKey,
    Section,
    SeqRange,
    SequenceSet,
    SortCriterion,
    State,
    _events as ev,
)

AUTH = State.AUTHENTICATED
SEL = State.SELECTED
NA = State.NOT_AUTHENTICATED


def bad(data: bytes, state: State = SEL) -> BadCommand:
    e = one(data, state=state)
    assert isinstance(e, BadCommand), e
    return e


# ---- any state / not authenticated ----------------------------------------------------------


@pytest.mark.parametrize(
    "line,cls",
    [
        (b"a1 CAPABILITY\r\n", ev.Capability),
        (b"a2 noop\r\n", ev.Noop),
        (b"A023 LOGOUT\r\n", ev.Logout),
        (b"a3 STARTTLS\r\n", ev.StartTLS),
    ],
)
def test_no_argument_commands(line, cls):
    e = one(line, state=NA)
    assert isinstance(e, cls) and e.tag == line.split()[0].decode()


def test_no_argument_command_rejects_arguments():
    assert "extra" in bad(b"a NOOP x\r\n").text


def test_login_atoms_quoted_and_literal():
    assert one(b"a001 LOGIN SMITH SESAME\r\n", state=NA) == ev.Login(
        "a001", username="SMITH", password="SESAME"
    )
    e = one(b'a2 LOGIN "fred \\"x\\"" "p\\\\w"\r\n', state=NA)
    assert (e.username, e.password) == ('fred "x"', "p\\w")
    e = one(b"a3 LOGIN {4}\r\nuser {8+}\r\np@ss w d\r\n", state=NA)
    assert (e.username, e.password) == ("user", "p@ss w d")
    assert "***" in repr(e) and "p@ss" not in repr(e)


def test_quoted_string_escapes_are_strict():
    assert "quoted" in bad(b'a LOGIN "a\\nb" x\r\n', state=NA).text
    assert "quoted" in bad(b'a LOGIN "\xc3\xa4" x\r\n', state=NA).text


def test_authenticate_with_and_without_sasl_ir():
    assert one(b"a AUTHENTICATE PLAIN\r\n", state=NA) == ev.Authenticate("a", mechanism="PLAIN")
    assert one(b"a AUTHENTICATE plain AGZvbwBiYXI=\r\n", state=NA).initial_response == b"\0foo\0bar"
    assert one(b"a AUTHENTICATE PLAIN =\r\n", state=NA).initial_response == b""
    bad(b"a AUTHENTICATE PLAIN AG$$\r\n", state=NA)


def test_id_command():
    e = one(b'a023 ID ("name" "sodr" "version" "19.34" "vendor" NIL)\r\n', state=NA)
    assert e.params == (("name", "sodr"), ("version", "19.34"), ("vendor", None))
    assert one(b"a ID NIL\r\n", state=NA).params is None


# ---- authenticated state --------------------------------------------------------------------


def test_enable():
    assert one(b"t2 ENABLE CONDSTORE X-GOOD-IDEA\r\n", state=AUTH).capabilities == (
        "CONDSTORE",
        "X-GOOD-IDEA",
    )
    bad(b"t2 ENABLE\r\n", state=AUTH)


def test_select_examine_and_inbox_case():
    assert one(b"A142 SELECT INBOX\r\n", state=AUTH) == ev.Select("A142", mailbox="INBOX")
    e = one(b'3 select "inbox" (CONDSTORE)\r\n', state=AUTH)
    assert e == ev.Select("3", mailbox="INBOX", condstore=True)
    e = one(b"A932 EXAMINE blurdybloop\r\n", state=AUTH)
    assert e.readonly and e.mailbox == "blurdybloop"


def test_select_qresync():
    e = one(
        b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n", state=AUTH
    )
    q = e.qresync
    assert (q.uidvalidity, q.modseq) == (67890007, 20050715194045000)
    assert str(q.known_uids) == "41,43:211,214:541" and q.known_seq is None
    e = one(
        b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000,9990:9999 "
        b"15000,22500,27000,29970,29973,29976,29979,29982,29985,29988,29991,29994,29997)))\r\n",
        state=AUTH,
    )
    assert str(e.qresync.known_seq) == "5000,7500,9000,9990:9999"
    assert e.qresync.known_seq_uids.ranges[0] == SeqRange(15000, 15000)
    e = one(b"A1 SELECT INBOX (QRESYNC (1 2 (1:3 4:6)))\r\n", state=AUTH)
    assert e.qresync.known_uids is None and str(e.qresync.known_seq_uids) == "4:6"
    bad(b"A1 SELECT INBOX (QRESYNC (0 2))\r\n", state=AUTH)
    bad(b"A1 SELECT INBOX (FOO)\r\n", state=AUTH)


def test_create_delete_rename_subscribe():
    assert one(b"A003 CREATE owatagusiam/\r\n", state=AUTH).mailbox == "owatagusiam/"
    assert one(b"t1 CREATE MySpecial (USE (\\Drafts \\Sent))\r\n", state=AUTH).special_use == (
        "\\Drafts",
        "\\Sent",
    )
    assert one(b"A683 DELETE blurdybloop\r\n", state=AUTH) == ev.Delete(
        "A683", mailbox="blurdybloop"
    )
    assert one(b"A683 RENAME blurdybloop sarasoop\r\n", state=AUTH) == ev.Rename(
        "A683", mailbox="blurdybloop", new_name="sarasoop"
    )
    assert (
        one(b"A002 SUBSCRIBE #news.comp.mail.mime\r\n", state=AUTH).mailbox
        == "#news.comp.mail.mime"
    )
    assert isinstance(one(b"A002 UNSUBSCRIBE x\r\n", state=AUTH), ev.Unsubscribe)


def test_mailbox_names_modified_utf7_and_utf8():
    e = one(b"a CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-\r\n", state=AUTH)
    assert e.mailbox == "~peter/mail/台北/日本語"
    assert "mailbox" in bad(b"a CREATE &Jjo!\r\n", state=AUTH).text
    assert "mailbox" in bad(b'a CREATE "&AGEAYgBj-"\r\n', state=AUTH).text  # encoded ASCII
    from imap_driver import events_of
    from protocols.imap import ServerConnection

    conn = ServerConnection(state=AUTH)
    conn.utf8_enabled = True
    [e] = events_of(b'a CREATE "Entw\xc3\xbcrfe"\r\n', conn=conn)
    assert e.mailbox == "Entwürfe"
    [e] = events_of(b'a CREATE "&AGE-"\r\n', conn=conn)  # taken literally under UTF8=ACCEPT
    assert e.mailbox == "&AGE-"
    [e] = events_of(b'a CREATE "bad\xff"\r\n', conn=conn)
    assert isinstance(e, BadCommand)


def test_list_basic_and_extended():
    assert one(b'A101 LIST "" ""\r\n', state=AUTH) == ev.List("A101", reference="", patterns=("",))
    e = one(b"A202 LIST ~/Mail/ %\r\n", state=AUTH)
    assert (e.reference, e.patterns, e.extended) == ("~/Mail/", ("%",), False)
    e = one(
        b'7 list (SPECIAL-USE) "" "*" return (SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))\r\n',
        state=AUTH,
    )
    assert e.extended and e.patterns == ("*",)
    assert e.params.selection == ("SPECIAL-USE",)
    assert e.params.returns == ("SUBSCRIBED", "CHILDREN", "STATUS")
    assert e.params.status_items == ("MESSAGES", "UNSEEN")
    e = one(b'A02 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)\r\n', state=AUTH)
    assert e.params.selection == ("SUBSCRIBED", "RECURSIVEMATCH")
    e = one(b'A03 LIST () "" ("foo" "foo/*" %)\r\n', state=AUTH)
    assert e.patterns == ("foo", "foo/*", "%") and e.params.selection == ()
    bad(b'A04 LIST (RECURSIVEMATCH) "" "%"\r\n', state=AUTH)
    bad(b'A04 LIST (BOGUS) "" "%"\r\n', state=AUTH)
    e = one(b'A05 LIST "" "%" RETURN ()\r\n', state=AUTH)
    assert e.extended and e.params.returns == ()


def test_lsub_namespace_status():
    e = one(b'A002 LSUB "#news." "comp.mail.*"\r\n', state=AUTH)
    assert (e.reference, e.pattern) == ("#news.", "comp.mail.*")
    assert isinstance(one(b"A001 NAMESPACE\r\n", state=AUTH), ev.Namespace)
    e = one(b"A042 STATUS blurdybloop (UIDNEXT MESSAGES)\r\n", state=AUTH)
    assert e.items == ("UIDNEXT", "MESSAGES")
    e = one(
        b"a STATUS INBOX (messages uidnext uidvalidity unseen deleted size recent highestmodseq "
        b"appendlimit mailboxid)\r\n",
        state=AUTH,
    )
    assert len(e.items) == 10
    bad(b"a STATUS INBOX (FOO)\r\n", state=AUTH)
    bad(b"a STATUS INBOX ()\r\n", state=AUTH)


def test_append_rfc_example_and_multiappend():
    msg = (
        b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example>\r\n"
        b"Subject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    )
    data = b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(msg) + msg + b"\r\n"
    e = one(data, state=AUTH)
    assert e.mailbox == "saved-messages"
    [m] = e.messages
    assert m.message == msg and m.flags == ("\\Seen",) and m.internal_date is None and not m.binary
    e = one(
        b'A1 APPEND INBOX (\\Seen $Forwarded) "17-Jul-1996 02:44:25 -0700" {3}\r\nabc'
        b' " 7-Feb-1994 21:52:25 +0100" {2+}\r\nde ~{3}\r\n\x00\x01\x02\r\n',
        state=AUTH,
    )
    a, b, c = e.messages
    assert a.flags == ("\\Seen", "$Forwarded")
    assert a.internal_date == datetime.datetime(
        1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7))
    )
    assert b.message == b"de" and b.internal_date.day == 7 and b.flags == ()
    assert c.binary and c.message == b"\x00\x01\x02"
    bad(b"A1 APPEND INBOX (\\Recent) {1}\r\nx\r\n", state=AUTH)
    bad(b'A1 APPEND INBOX "31-Feb-1996 02:44:25 -0700" {1}\r\nx\r\n', state=AUTH)
    bad(b"A1 APPEND INBOX\r\n", state=AUTH)
    bad(b'A1 APPEND INBOX "abc"\r\n', state=AUTH)


def test_idle_getquota_compress():
    assert isinstance(one(b"A IDLE\r\n", state=AUTH), ev.Idle)
    assert one(b'G GETQUOTA ""\r\n', state=AUTH).root == ""
    assert one(b"G GETQUOTAROOT inbox\r\n", state=AUTH).mailbox == "INBOX"
    assert one(b"c COMPRESS DEFLATE\r\n", state=AUTH).mechanism == "DEFLATE"


# ---- selected state -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,cls",
    [
        (b"FXXZ CHECK\r\n", ev.Check),
        (b"A341 CLOSE\r\n", ev.Close),
        (b"a UNSELECT\r\n", ev.Unselect),
        (b"A202 EXPUNGE\r\n", ev.Expunge),
    ],
)
def test_selected_no_argument_commands(line, cls):
    assert isinstance(one(line), cls)


def test_uid_expunge():
    e = one(b"A003 UID EXPUNGE 3000:3002\r\n")
    assert e.uid and str(e.uid_set) == "3000:3002"
    assert not one(b"A EXPUNGE\r\n").uid


def test_fetch_rfc_examples():
    e = one(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])\r\n")
    assert e.sequence_set == SequenceSet((SeqRange(2, 4),))
    assert e.attributes == (
        FetchAttribute("FLAGS"),
        FetchAttribute("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM"))),
    )
    assert e.attributes[1].response_name() == "BODY[HEADER.FIELDS (DATE FROM)]"
    e = one(b"A999 UID FETCH 4827313:4828442 FLAGS\r\n")
    assert e.uid and e.attributes == (FetchAttribute("FLAGS"),)
    e = one(b"a FETCH 1 ALL\r\n")
    assert e.macro == "ALL" and [a.name for a in e.attributes] == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
    ]
    assert [a.name for a in one(b"a FETCH 1 fast\r\n").attributes] == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
    ]
    assert one(b"a FETCH 1 FULL\r\n").attributes[-1] == FetchAttribute("BODY")


def test_fetch_sections_partials_binary():
    e = one(
        b"a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (Subject x-y)]<0.100> BINARY[1]<5.10> "
        b"BINARY.PEEK[2.3] BINARY.SIZE[2] BODY[] BODY[3.MIME] body[2.text] RFC822.HEADER UID "
        b"BODYSTRUCTURE MODSEQ EMAILID THREADID PREVIEW SAVEDATE RFC822 RFC822.TEXT ENVELOPE INTERNALDATE)\r\n"
    )
    a = e.attributes
    assert a[0] == FetchAttribute(
        "BODY", Section((1, 2), "HEADER.FIELDS.NOT", ("Subject", "x-y")), (0, 100), True
    )
    assert a[0].response_name() == "BODY[1.2.HEADER.FIELDS.NOT (Subject x-y)]<0>"
    assert not a[0].sets_seen
    assert a[1] == FetchAttribute("BINARY", Section((1,)), (5, 10)) and a[1].sets_seen
    assert a[2].peek and a[2].section.part == (2, 3)
    assert a[3] == FetchAttribute("BINARY.SIZE", Section((2,)))
    assert a[4].section == Section() and a[4].response_name() == "BODY[]"
    assert a[5].section == Section((3,), "MIME")
    assert a[6].section == Section((2,), "TEXT") and a[6].response_name() == "BODY[2.TEXT]"
    assert [x.name for x in a[7:]] == [
        "RFC822.HEADER",
        "UID",
        "BODYSTRUCTURE",
        "MODSEQ",
        "EMAILID",
        "THREADID",
        "PREVIEW",
        "SAVEDATE",
        "RFC822",
        "RFC822.TEXT",
        "ENVELOPE",
        "INTERNALDATE",
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"a FETCH 1 (BODY[MIME])\r\n",
        b"a FETCH 1 (BINARY[HEADER])\r\n",
        b"a FETCH 1 (BODY[0])\r\n",
        b"a FETCH 1 (BODY[1.FOO])\r\n",
        b"a FETCH 1 (BODY[]<0.0>)\r\n",
        b"a FETCH 1 BINARY\r\n",
        b"a FETCH 1 (FLAGS\r\n",
        b"a FETCH 1 ()\r\n",
        b"a FETCH 1 (XYZZY)\r\n",
        b"a FETCH 0 FLAGS\r\n",
        b"a FETCH 1 (BODY[HEADER.FIELDS ()])\r\n",
        b"a FETCH 1 FLAGS (VANISHED)\r\n",
        b"a UID FETCH 1 FLAGS (VANISHED)\r\n",
        b"a FETCH 1 FLAGS (CHANGEDSINCE x)\r\n",
    ],
)
def test_fetch_errors(line):
    bad(line)


def test_fetch_modifiers():
    e = one(b"5 UID fetch 1:* (FLAGS) (CHANGEDSINCE 1234)\r\n")
    assert e.uid and e.changed_since == 1234 and not e.vanished
    assert str(e.sequence_set) == "1:*"
    e = one(b"A UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n")
    assert e.vanished and e.changed_since == 12345


def test_store_forms():
    e = one(b"A003 STORE 2:4 +FLAGS (\\Deleted)\r\n")
    assert (e.mode, e.silent, e.flags, e.uid) == ("+", False, ("\\Deleted",), False)
    e = one(b"a UID STORE 1:* -FLAGS.SILENT (\\seen $Junk)\r\n")
    assert (e.mode, e.silent, e.flags, e.uid) == ("-", True, ("\\Seen", "$Junk"), True)
    e = one(b"a STORE 1 FLAGS \\Answered \\Flagged\r\n")
    assert e.mode == "" and e.flags == ("\\Answered", "\\Flagged")
    e = one(b"a STORE 1 FLAGS ()\r\n")
    assert e.flags == ()
    e = one(b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)\r\n")
    assert e.unchanged_since == 320162338 and e.silent
    bad(b"a STORE 1 +FLAGS (\\Recent)\r\n")
    bad(b"a STORE 1 LABELS (x)\r\n")


def test_copy_move():
    e = one(b"A003 COPY 2:4 MEETING\r\n")
    assert e == ev.Copy("A003", sequence_set=SequenceSet.of((2, 4)), mailbox="MEETING")
    e = one(b"a UID MOVE 42:69 foo\r\n")
    assert isinstance(e, ev.Move) and e.uid
    bad(b"a COPY 1\r\n")


def test_unknown_and_wrong_state():
    assert "unknown command" in bad(b"a FROBNICATE\r\n").text
    assert "UID" in bad(b"a UID NOOP\r\n").text
    assert "not allowed" in bad(b"a FETCH 1 FLAGS\r\n", state=AUTH).text
    assert "not allowed" in bad(b"a LOGIN a b\r\n", state=SEL).text
    assert bad(b"+ NOOP\r\n").tag is None  # "+" is not a tag character
    assert bad(b"(x NOOP\r\n").tag is None


def test_tags():
    assert one(b"a.b-c_9 NOOP\r\n").tag == "a.b-c_9"
    assert one(b"]x NOOP\r\n").tag == "]x"


# ---- SEARCH ---------------------------------------------------------------------------------


def test_search_rfc_examples():
    e = one(b'A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"\r\n')
    assert e.criteria == SearchKey(
        "AND",
        (
            SearchKey("FLAGGED"),
            SearchKey("SINCE", (datetime.date(1994, 2, 1),)),
            SearchKey("NOT", (SearchKey("FROM", ("Smith",)),)),
        ),
    )
    e = one(b'A283 SEARCH TEXT "string not in mailbox"\r\n')
    assert e.criteria == SearchKey("TEXT", ("string not in mailbox",)) and e.returns is None
    e = one(
        b"A284 SEARCH CHARSET UTF-8 TEXT {12}\r\n\xe0\xa4\x90\xe0\xa4\xbf\xe0\xa4\xa8\xe0\xa5\x8d\r\n"
    )
    assert e.charset == "UTF-8" and e.criteria.args[0] == "\u0910\u093f\u0928\u094d"
    e = one(b"A285 SEARCH RETURN (MIN MAX) 1:98\r\n")
    assert e.returns == ("MIN", "MAX") and e.criteria.op == "SEQSET"
    e = one(b"A286 UID SEARCH RETURN () UNDELETED UNKEYWORD $Junk\r\n")
    assert e.uid and e.returns == ()
    e = one(b'A1 SEARCH RETURN (SAVE) SINCE 19-Mar-2007 OR SUBJECT ESEARCH TEXT "sort"\r\n')
    assert e.criteria.args[1].op == "OR"
    assert one(b"A2 UID SEARCH UID $\r\n").criteria == SearchKey("UID", (SequenceSet(saved=True),))


def test_search_all_keys():
    line = (
        b"a SEARCH ALL ANSWERED BCC x BEFORE 1-Jan-2000 BODY y CC z DELETED DRAFT FLAGGED FROM f "
        b'HEADER X-Foo "" KEYWORD $Label1 LARGER 100 NEW NOT SEEN OLD ON 2-Feb-2001 OR 1 2 RECENT SEEN '
        b'SENTBEFORE 3-Mar-2002 SENTON 4-Apr-2003 SENTSINCE 5-May-2004 SINCE "6-Jun-2005" SMALLER 200 '
        b"SUBJECT s TEXT t TO u UID 1:* UNANSWERED UNDELETED UNDRAFT UNFLAGGED UNKEYWORD k UNSEEN "
        b"OLDER 60 YOUNGER 30 SAVEDBEFORE 1-Jan-2020 SAVEDON 1-Jan-2020 SAVEDSINCE 1-Jan-2020 "
        b"EMAILID M6d99ac3275bb4e THREADID T64b478a75b7ea9 MODSEQ 5 (UNSEEN) 5:*,$x\r\n"
    )
    e = one(line.replace(b",$x", b""))
    ops = [k.op for k in e.criteria.args]
    assert ops[:3] == ["ALL", "ANSWERED", "BCC"] and ops[-4:] == [
        "THREADID",
        "MODSEQ",
        "UNSEEN",
        "SEQSET",
    ]
    assert "HEADER" in ops and "SAVEDSINCE" in ops and len(ops) == 45
    header = next(k for k in e.criteria.args if k.op == "HEADER")
    assert header.args == ("X-Foo", "")
    bad(line)  # "$x" is not a sequence set


def test_search_nesting_and_limits():
    e = one(b"a SEARCH (OR (SEEN FLAGGED) (NOT (DELETED)))\r\n")
    assert e.criteria.op == "OR"
    deep = b"a SEARCH " + b"(" * 40 + b"ALL" + b")" * 40 + b"\r\n"
    assert "deep" in bad(deep).text
    deep_not = b"a SEARCH " + b"NOT " * 40 + b"ALL\r\n"
    assert "deep" in bad(deep_not).text
    e = bad(b"a SEARCH CHARSET X-UNKNOWN ALL\r\n")
    assert (e.status, e.code) == ("NO", "BADCHARSET (UTF-8 US-ASCII)")
    for line in [
        b"a SEARCH\r\n",
        b"a SEARCH ()\r\n",
        b"a SEARCH FOO\r\n",
        b"a SEARCH OR SEEN\r\n",
        b"a SEARCH BEFORE 32-Jan-2000\r\n",
        b"a SEARCH RETURN (BLAH) ALL\r\n",
        b"a SEARCH LARGER x\r\n",
        b'a SEARCH MODSEQ "/flags/x" nope 5\r\n',
    ]:
        bad(line)


def test_sort_and_thread():
    e = one(b"A282 SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994\r\n")
    assert e.criteria == (SortCriterion("SUBJECT"),) and e.search.op == "SINCE"
    e = one(b"A283 UID SORT (SUBJECT REVERSE DATE) UTF-8 ALL\r\n")
    assert e.uid and e.criteria[1] == SortCriterion("DATE", True)
    e = one(b"A1 SORT RETURN (MIN) (DISPLAYFROM) UTF-8 UNSEEN\r\n")
    assert e.returns == ("MIN",)
    e = one(b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000\r\n")
    assert e.algorithm == "ORDEREDSUBJECT"
    assert one(b'A284 UID THREAD REFERENCES US-ASCII TEXT "gewp"\r\n').uid
    bad(b"a SORT (BOGUS) UTF-8 ALL\r\n")
    bad(b"a SORT () UTF-8 ALL\r\n")
    bad(b"a THREAD BOGUS UTF-8 ALL\r\n")


# ---- sequence sets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,ranges",
    [
        ("1:*", [(1, None)]),
        ("*:5", [(None, 5)]),
        ("1,3:5,7", [(1, 1), (3, 5), (7, 7)]),
        ("*", [(None, None)]),
        ("1:4294967295", [(1, 4294967295)]),
        ("4:2", [(4, 2)]),
    ],
)
def test_sequence_sets(text, ranges):
    e = one(b"a FETCH " + text.encode() + b" UID\r\n")
    assert [(r.start, r.end) for r in e.sequence_set.ranges] == ranges
    assert str(e.sequence_set) == text


@pytest.mark.parametrize(
    "text", [b"0", b"1:0", b"4294967296", b"1,", b",1", b"1::2", b"1:*:2", b"a", b"$,1", b"01"]
)
def test_invalid_sequence_sets(text):
    bad(b"a FETCH " + text + b" UID\r\n")


def test_sequence_set_resolution_is_lazy():
    s = SequenceSet.of((1, 4294967295))
    assert s.resolved(10) == [(1, 4294967295)]
    assert list(s.iter(10, limit=3)) == [1, 2, 3]
    assert s.contains(4294967295, 10)
    s = SequenceSet.of((None, 5), 2, (3, 4))
    assert s.resolved(3) == [(2, 5)]  # "*:5" with * = 3 is 3:5
    assert SequenceSet.of((None, None)).resolved(0) == [(0, 0)]
    assert list(SequenceSet.of((None, None)).iter(0)) == []
    assert SequenceSet.of(5, (1, 3), (2, 4)).resolved(9) == [(1, 5)]


# ---- lines real clients send ------------------------------------------------------------------

HEADERS = (
    b"BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References "
    b"Newsgroups In-Reply-To Content-Type Reply-To)]"
)


@pytest.mark.parametrize(
    "line,state",
    [
        (b"1 capability\r\n", NA),
        (b"2 authenticate PLAIN\r\n", NA),
        (b'3 ID ("name" "Thunderbird" "version" "115.3.1")\r\n', AUTH),
        (b"4 enable CONDSTORE\r\n", AUTH),
        (b'5 list (SUBSCRIBED) "" "*" RETURN (SPECIAL-USE)\r\n', AUTH),
        (b'6 getquotaroot "INBOX"\r\n', AUTH),
        (b'7 select "INBOX" (CONDSTORE)\r\n', AUTH),
        (b"8 UID fetch 1:* (FLAGS) (CHANGEDSINCE 1234)\r\n", SEL),
        (b"9 UID fetch 41:* (UID RFC822.SIZE FLAGS " + HEADERS + b")\r\n", SEL),
        (b"10 uid store 42 +Flags (\\Seen)\r\n", SEL),
        (b"11 UID fetch 42 (UID RFC822.SIZE BODY.PEEK[])\r\n", SEL),
        (b'12 UID COPY 42 "Trash"\r\n', SEL),
        (b'13 UID MOVE 42:44 "[Gmail]/Trash"\r\n', SEL),
        (b"14 IDLE\r\n", SEL),
        (b'15 STATUS "Sent" (UIDNEXT MESSAGES UNSEEN RECENT)\r\n', AUTH),
        (b"16 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12 VANISHED)\r\n", SEL),
        (b"17 UID SEARCH 1:* NOT DELETED\r\n", SEL),
        (
            b"18 UID FETCH 1:4294967295 (UID INTERNALDATE RFC822.SIZE FLAGS MODSEQ BODY.PEEK[HEADER])\r\n",
            SEL,
        ),
        (b'19 APPEND "Drafts" (\\Draft \\Seen) {3+}\r\nabc\r\n', AUTH),
        (b"20 UID SEARCH SINCE 1-Jan-2024 UNDELETED\r\n", SEL),
        (b"21 uid fetch 5 (BODYSTRUCTURE)\r\n", SEL),
        (b"22 UID FETCH 5 (BODY.PEEK[1.MIME] BODY.PEEK[1]<0.2048>)\r\n", SEL),
        (b'23 LIST "" "%"\r\n', AUTH),
        (b"24 NAMESPACE\r\n", AUTH),
        (b"25 UNSELECT\r\n", SEL),
        (b"26 COMPRESS DEFLATE\r\n", AUTH),
        (b"27 UID THREAD REFS UTF-8 ALL\r\n", SEL),
        (b'28 LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN HIGHESTMODSEQ))\r\n', AUTH),
        (b"29 UID EXPUNGE 42\r\n", SEL),
        (b'30 examine "Archive/2023" (QRESYNC (1234 5678 1:99))\r\n', AUTH),
    ],
)
def test_real_client_lines(line, state):
    e = one(line, state=state)
    assert not isinstance(e, BadCommand), e


def test_header_field_names_are_validated_and_echoed():
    e = one(b'a FETCH 1 (BODY[HEADER.FIELDS ("X(1)" {5}\r\nX-Foo)])\r\n')
    assert e.attributes[0].response_name() == 'BODY[HEADER.FIELDS ("X(1)" X-Foo)]'
    bad(b'a FETCH 1 (BODY[HEADER.FIELDS ("a b")])\r\n')
    bad(b"a FETCH 1 (BODY[HEADER.FIELDS ({4}\r\na\r\nb)])\r\n")
    bad(b'a FETCH 1 (BODY[HEADER.FIELDS ("Subject:")])\r\n')


def test_append_utf8_data_extension():
    from imap_driver import events_of

    from protocols.imap import ServerConnection

    conn = ServerConnection(state=AUTH)
    conn.utf8_enabled = True
    [e] = [x for x in events_of(b"a APPEND INBOX UTF8 (~{3}\r\n\xc3\xa4x)\r\n", conn=conn)
           if isinstance(x, ev.Append)]
    assert e.messages[0].message == b"\xc3\xa4x" and e.messages[0].utf8
    assert "UTF8=ACCEPT" in bad(b"a APPEND INBOX UTF8 (~{1}\r\nx)\r\n", state=AUTH).text
