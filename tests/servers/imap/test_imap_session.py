"""The IMAP daemon over a real socket: session core, byte-exact replies, RFC semantics."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import zlib

from mailserver.testing.daemons import DOMAIN, PASSWORD, daemon_env
from tests.servers.imap.conftest import RawImap, deliver, message, tagged, untagged, wait_for


async def test_greeting_capability_and_logout(env):
    c = await RawImap.connect(env.address("imap"))
    greeting = await c.greeting()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    assert b"STARTTLS" in greeting and b"AUTH=PLAIN" in greeting
    lines = await c.ok("CAPABILITY")
    assert lines[0].startswith(b"* CAPABILITY IMAP4rev1 IMAP4rev2")
    for cap in (b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC",
                b"ESEARCH", b"SEARCHRES", b"SPECIAL-USE", b"LIST-STATUS", b"LITERAL+",
                b"SASL-IR", b"BINARY", b"THREAD=REFERENCES"):
        assert cap in lines[0]
    lines = await c.cmd("LOGOUT")
    assert lines[0] == b"* BYE Logging out\r\n"
    assert lines[1] == b"t2 OK LOGOUT completed\r\n"
    await c.close()


async def test_commands_before_authentication_are_refused(env):
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    for command in ("SELECT INBOX", "LIST \"\" *", "FETCH 1 FLAGS", "APPEND INBOX {3+}\r\nabc"):
        lines = await c.cmd(command)
        assert b" BAD " in tagged(lines), lines
    lines = await c.cmd(f'LOGIN alice@{DOMAIN} wrong')
    assert tagged(lines) == b"t5 NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    await c.login()
    await c.close()


async def test_logindisabled_until_starttls(tmp_path):
    async with daemon_env(tmp_path) as env:  # [imap] tls = "required" (the default)
        await env.start("imap")
        c = await RawImap.connect(env.address("imap"))
        greeting = await c.greeting()
        assert b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting
        lines = await c.cmd(f'LOGIN alice@{DOMAIN} "{PASSWORD}"')
        assert tagged(lines).startswith(b"t1 NO [PRIVACYREQUIRED]")
        # anything pipelined behind STARTTLS is dropped, never executed after the handshake
        c.send(b"t2 STARTTLS\r\nt3 CAPABILITY\r\n")
        assert await c.response() == b"t2 OK Begin TLS negotiation now\r\n"
        await c.writer.start_tls(env.client_tls())
        c.n = 3
        lines = await c.cmd("CAPABILITY")
        assert lines[-1].startswith(b"t4 OK"), lines
        assert b"AUTH=PLAIN" in lines[0] and b"LOGINDISABLED" not in lines[0]
        assert b"STARTTLS" not in lines[0]
        await c.login()
        await c.close()

        def implicit_tls():
            m = imaplib.IMAP4_SSL(*env.address("imap", tls=True), ssl_context=env.client_tls())
            assert "LOGINDISABLED" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
            m.login(f"alice@{DOMAIN}", PASSWORD)
            typ, data = m.select("INBOX")
            m.logout()
            return typ

        assert await asyncio.to_thread(implicit_tls) == "OK"


async def test_authenticate_plain_with_and_without_initial_response(env):
    token = base64.b64encode(f"\0alice@{DOMAIN}\0{PASSWORD}".encode()).decode()
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    lines = await c.cmd(f"AUTHENTICATE PLAIN {token}")
    assert tagged(lines).startswith(b"t1 OK [CAPABILITY ")
    await c.close()
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert await c.response() == b"+ \r\n"
    c.send(b"*\r\n")
    assert await c.response() == b"a BAD Authentication cancelled\r\n"
    c.send(b"b AUTHENTICATE PLAIN\r\n")
    assert await c.response() == b"+ \r\n"
    c.send(token.encode() + b"\r\n")
    assert (await c.response()).startswith(b"b OK [CAPABILITY")
    await c.close()


async def test_too_many_auth_failures_close_the_connection(env):
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    for i in range(env.app.config.limits.max_auth_failures - 1):
        assert b"NO" in tagged(await c.cmd(f"LOGIN alice@{DOMAIN} bad{i}"))
    c.send(b"x LOGIN nobody@example.test bad\r\n")
    lines = [await c.response(), await c.response()]
    assert lines[1].startswith(b"* BYE")
    assert await c.reader.read() == b""
    await c.close()


async def test_id_namespace_enable(client):
    lines = await client.ok('ID ("name" "test")')
    assert lines[0] == b'* ID ("name" "mailserver" "vendor" "mailserver")\r\n'
    lines = await client.ok("NAMESPACE")
    assert lines[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    lines = await client.ok("ENABLE CONDSTORE QRESYNC UTF8=ACCEPT X-UNKNOWN")
    assert lines[0] == b"* ENABLED CONDSTORE QRESYNC UTF8=ACCEPT\r\n"
    lines = await client.ok("ENABLE CONDSTORE")
    assert lines[0] == b"* ENABLED\r\n"


async def test_list_extended_special_use_status_and_children(client):
    await client.ok("CREATE Work/Projects")
    lines = await client.ok('LIST "" *')
    names = [r for r in lines if r.startswith(b"* LIST")]
    assert b'* LIST (\\HasChildren) "/" Work\r\n' in names
    assert b'* LIST (\\HasNoChildren) "/" Work/Projects\r\n' in names
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n' in names
    lines = await client.ok('LIST "" %')
    assert not any(b"Work/Projects" in r for r in lines)
    lines = await client.ok('LIST (SPECIAL-USE) "" * RETURN (STATUS (MESSAGES UNSEEN SIZE))')
    assert b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n' in lines
    assert b"* STATUS Trash (MESSAGES 0 UNSEEN 0 SIZE 0)\r\n" in lines
    assert not any(b"Work" in r or b"INBOX" in r for r in lines)
    lines = await client.ok('LIST "" ""')
    assert lines[0] == b'* LIST (\\Noselect) "/" ""\r\n'
    await client.ok("UNSUBSCRIBE Work/Projects")
    lines = await client.ok('LIST (SUBSCRIBED) "" "Work*"')
    assert lines[:-1] == [b'* LIST (\\HasChildren \\Subscribed) "/" Work\r\n']
    lines = await client.ok('LSUB "" "*"')
    assert b'* LSUB () "/" Work\r\n' in lines and not any(b"Projects" in r for r in lines)
    lines = await client.ok('LIST "" inbox')
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" INBOX\r\n'


async def test_create_special_use_rename_delete(client):
    lines = await client.cmd("CREATE Spam (USE (\\Junk))")
    assert tagged(lines).startswith(b"t1 NO [USEATTR]")  # Junk already has the role
    await client.ok("CREATE Everything (USE (\\All))")
    lines = await client.ok('LIST "" Everything')
    assert lines[0] == b'* LIST (\\HasNoChildren \\All) "/" Everything\r\n'
    assert tagged(await client.cmd("CREATE Everything")).startswith(b"t4 NO [ALREADYEXISTS]")
    await client.ok("RENAME Everything Stuff")
    assert tagged(await client.cmd("DELETE Everything")).startswith(b"t6 NO [NONEXISTENT]")
    await client.ok("CREATE Stuff/Sub")
    assert tagged(await client.cmd("DELETE Stuff")).startswith(b"t8 NO [HASCHILDREN]")
    assert tagged(await client.cmd("DELETE INBOX")).startswith(b"t9 NO [CANNOT]")
    # modified UTF-7 names round-trip; invalid modified UTF-7 is refused
    await client.ok("CREATE &AMk-t&AOk-")
    lines = await client.ok('LIST "" "&AMk-*"')
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" &AMk-t&AOk-\r\n'
    lines = await client.cmd("CREATE &Jjo!")
    assert b" BAD " in tagged(lines) or b" NO " in tagged(lines)


async def test_append_fetch_and_sections(client):
    raw = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: parts\r\n"
           b"Message-ID: <p1@example.test>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
           b"--XX\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--XX--\r\n")
    client.send(b"t1 APPEND INBOX (\\Seen $Label) \"01-Jan-2026 10:00:00 +0100\" {%d}\r\n"
                % len(raw))
    assert (await client.response()).startswith(b"+ ")
    client.n = 1
    client.send(raw + b"\r\n")
    lines = await client.until_tagged("t1")
    assert tagged(lines).startswith(b"t1 OK [APPENDUID ")
    lines = await client.ok("SELECT INBOX")
    assert b"* 1 EXISTS\r\n" in lines
    lines = await client.ok("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE UID)")
    assert lines[0] == (b'* 1 FETCH (FLAGS ($label \\Seen) INTERNALDATE '
                        b'" 1-Jan-2026 10:00:00 +0100" RFC822.SIZE %d UID 1)\r\n' % len(raw))
    lines = await client.ok("FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.MIME] BINARY.PEEK[2] "
                            "BINARY.SIZE[2] BODY.PEEK[]<0.4>)")
    assert lines[0] == (b"* 1 FETCH (BODY[1] {10}\r\nfirst part BODY[2.MIME] {77}\r\n"
                        b"Content-Type: application/octet-stream\r\n"
                        b"Content-Transfer-Encoding: base64\r\n\r\n"
                        b" BINARY[2] ~{3}\r\n\x00\x01\x02 BINARY.SIZE[2] 3 BODY[]<0> {4}\r\nFrom)\r\n")
    lines = await client.ok("FETCH 1 BODY.PEEK[]")
    assert lines[0] == b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\n" % (len(raw), raw)
    lines = await client.ok("FETCH 1 (RFC822.HEADER BINARY.PEEK[])")
    head = raw[:raw.index(b"\r\n\r\n") + 4]
    assert lines[0] == b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s BINARY[] {%d}\r\n%s)\r\n" % (
        len(head), head, len(raw), raw)
    lines = await client.ok("UID FETCH 1 (EMAILID THREADID SAVEDATE PREVIEW MODSEQ)")
    assert b"EMAILID (M" in lines[0] and b"THREADID (T" in lines[0] and b"MODSEQ (" in lines[0]
    assert b"PREVIEW " in lines[0] and b"SAVEDATE \"" in lines[0]
    lines = await client.ok("FETCH 1 BODYSTRUCTURE")
    assert lines[0].upper().startswith(b'* 1 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" '
                                       b'"US-ASCII") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)('
                               b'"APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 4 NIL NIL '
                               b'NIL NIL) "MIXED" ("BOUNDARY" "XX") NIL NIL NIL))\r\n')
    lines = await client.ok("FETCH 1 ENVELOPE")
    assert lines[0] == (b'* 1 FETCH (ENVELOPE (NIL "parts" (("Bob" NIL "bob" "example.test")) '
                        b'(("Bob" NIL "bob" "example.test")) (("Bob" NIL "bob" "example.test")) '
                        b'((NIL NIL "alice" "example.test")) NIL NIL NIL '
                        b'"<p1@example.test>"))\r\n')


async def test_fetch_body_sets_seen_and_examine_does_not(client, env):
    await deliver(env, message("one"))
    lines = await client.ok("EXAMINE INBOX")
    assert tagged(lines).startswith(b"t1 OK [READ-ONLY]")
    lines = await client.ok("FETCH 1 BODY[TEXT]")
    assert lines[0] == b"* 1 FETCH (BODY[TEXT] {13}\r\nhello world\r\n)\r\n"
    assert tagged(await client.cmd("STORE 1 +FLAGS (\\Flagged)")).startswith(b"t3 NO")
    await client.ok("SELECT INBOX")
    lines = await client.ok("FETCH 1 BODY[TEXT]")
    assert lines[0] == b"* 1 FETCH (BODY[TEXT] {13}\r\nhello world\r\n FLAGS (\\Seen))\r\n"


async def test_store_flags_silent_and_unchangedsince(client, env):
    for i in range(3):
        await deliver(env, message(f"m{i}"))
    await client.ok("SELECT INBOX (CONDSTORE)")
    lines = await client.ok("STORE 1:2 +FLAGS (\\Flagged Junk)")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Flagged junk) MODSEQ (")
    lines = await client.ok("STORE 1 -FLAGS.SILENT (junk)")
    assert len(lines) == 1
    lines = await client.ok("UID STORE 3 FLAGS (\\Answered)")
    assert lines[0].startswith(b"* 3 FETCH (UID 3 FLAGS (\\Answered) MODSEQ (")
    modseq = int(lines[0].split(b"MODSEQ (")[1].split(b")")[0])
    lines = await client.ok(f"STORE 1:3 (UNCHANGEDSINCE {modseq - 1}) +FLAGS (\\Seen)")
    assert tagged(lines).startswith(b"t5 OK [MODIFIED 3")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Seen) MODSEQ") or \
        lines[0].startswith(b"* 1 FETCH (FLAGS (\\Flagged \\Seen)")
    lines = await client.cmd("STORE 1 +FLAGS (\\Recent)")
    assert b" BAD " in tagged(lines)


async def test_search_esearch_searchres_sort_thread(client, env):
    await deliver(env, message("apple pie", "crumble", msgid="a@x"))
    await deliver(env, message("Re: apple pie", "yes please", msgid="b@x",
                               extra="In-Reply-To: <a@x>\r\nReferences: <a@x>\r\n"))
    await deliver(env, message("banana", "bread", msgid="c@x", sender="zed@example.test"))
    await client.ok("SELECT INBOX")
    await client.ok("STORE 3 +FLAGS (\\Deleted)")
    assert (await client.ok("SEARCH SUBJECT apple"))[0] == b"* SEARCH 1 2\r\n"
    assert (await client.ok("SEARCH OR BODY bread DELETED"))[0] == b"* SEARCH 3\r\n"
    assert (await client.ok("SEARCH NOT (DELETED)"))[0] == b"* SEARCH 1 2\r\n"
    assert (await client.ok('SEARCH HEADER Message-ID "b@x"'))[0] == b"* SEARCH 2\r\n"
    assert (await client.ok("UID SEARCH 2:*"))[0] == b"* SEARCH 2 3\r\n"
    assert (await client.ok("SEARCH 1:4294967295"))[0] == b"* SEARCH 1 2 3\r\n"
    lines = await client.ok("SEARCH RETURN (MIN MAX COUNT) UNDELETED")
    assert lines[0] == b'* ESEARCH (TAG "t9") MIN 1 MAX 2 COUNT 2\r\n'
    lines = await client.ok("UID SEARCH RETURN (SAVE) FROM zed")
    assert lines == [b"t10 OK SEARCH completed\r\n"]
    lines = await client.ok("FETCH $ (UID)")
    assert lines[0] == b"* 3 FETCH (UID 3)\r\n"
    lines = await client.ok("SEARCH RETURN () CHARSET UTF-8 ALL")
    assert lines[0] == b'* ESEARCH (TAG "t12") ALL 1:3\r\n'
    lines = await client.cmd("SEARCH CHARSET KOI8-U ALL")
    assert tagged(lines) == b"t13 NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset KOI8-U\r\n"
    assert (await client.ok("SORT (REVERSE FROM) UTF-8 ALL"))[0] == b"* SORT 3 1 2\r\n"
    assert (await client.ok("SORT (SUBJECT) UTF-8 ALL"))[0] == b"* SORT 1 2 3\r\n"
    lines = await client.ok("THREAD REFERENCES UTF-8 ALL")
    assert lines[0] == b"* THREAD (1 2)(3)\r\n"
    lines = await client.ok("THREAD ORDEREDSUBJECT UTF-8 ALL")
    assert lines[0] == b"* THREAD (1 2)(3)\r\n"
    # deep nesting: refused by the parser's limit, the session goes on
    lines = await client.cmd("SEARCH " + "(" * 200 + "ALL" + ")" * 200)
    assert b" BAD " in tagged(lines)
    lines = await client.cmd("SEARCH " + "NOT " * 500 + "ALL")
    assert b" BAD " in tagged(lines)
    await client.ok("NOOP")


async def test_copy_move_expunge_uidplus(client, env):
    for i in range(4):
        await deliver(env, message(f"m{i}"))
    lines = await client.ok("SELECT INBOX")
    uidvalidity_archive = None
    lines = await client.ok("COPY 1:2 Archive")
    assert tagged(lines).startswith(b"t2 OK [COPYUID ")
    uidvalidity_archive = tagged(lines).split()[3]
    assert tagged(lines).split()[4:6] == [b"1:2", b"1:2]"]
    lines = await client.ok("UID MOVE 2:3 Archive")
    # UID 2 is already in Archive (copied above): it keeps its UID there
    assert lines[0] == b"* OK [COPYUID " + uidvalidity_archive + b" 2:3 2:3] Moved\r\n"
    assert lines[1:3] == [b"* 3 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert tagged(await client.cmd("COPY 1 Nowhere")).startswith(b"t4 NO [TRYCREATE]")
    await client.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
    lines = await client.ok("UID EXPUNGE 4")
    assert lines[0] == b"* 2 EXPUNGE\r\n"
    lines = await client.ok("EXPUNGE")
    assert lines[0] == b"* 1 EXPUNGE\r\n"
    lines = await client.ok("STATUS Archive (MESSAGES UIDNEXT DELETED)")
    # flags belong to the email (JMAP keywords), so the copy in Archive is \Deleted too
    assert lines[0] == b"* STATUS Archive (MESSAGES 3 UIDNEXT 4 DELETED 1)\r\n"


async def test_multiappend_is_atomic_and_reports_all_uids(client):
    a, b = message("first"), message("second")
    client.send(b"t1 APPEND Drafts (\\Draft) {%d+}\r\n%s (\\Seen) {%d+}\r\n%s\r\n"
                % (len(a), a, len(b), b))
    lines = await client.until_tagged("t1")
    assert tagged(lines).startswith(b"t1 OK [APPENDUID ") and tagged(lines).split()[4] == b"1:2]"
    lines = await client.ok("STATUS Drafts (MESSAGES)")
    assert lines[0] == b"* STATUS Drafts (MESSAGES 2)\r\n"
    assert tagged(await client.cmd(b"APPEND Nope {1+}\r\nx")).startswith(b"t2 NO [TRYCREATE]")


async def test_literal_limits_and_bad_input(tmp_path):
    async with daemon_env(tmp_path, None, overrides={
            "imap": {"tls": "starttls"}, "limits": {"max_message_size": 1000}}) as env:
        await env.start("imap")
        c = await RawImap.connect(env.address("imap"))
        await c.greeting()
        await c.login()
        c.n = 0
        # a synchronizing literal over the limit is refused before any of it is sent
        lines = await c.cmd("APPEND INBOX {5000}")
        assert tagged(lines) == b"t1 NO [TOOBIG] Literal too big\r\n"
        await c.ok("NOOP")
        lines = await c.cmd("SELECT &Jjo!")
        assert b" BAD " in tagged(lines) or b" NO " in tagged(lines)
        lines = await c.cmd("FETCH 1 FLAGS")
        assert b" BAD " in tagged(lines)  # not selected
        await c.ok("SELECT INBOX")
        lines = await c.ok("FETCH 1:4294967295 (FLAGS)")
        assert lines == [b"t6 OK FETCH completed\r\n"]
        lines = await c.cmd("FETCH 1:4294967296 (FLAGS)")
        assert b" BAD " in tagged(lines)
        lines = await c.cmd("FOO BAR")
        assert b" BAD " in tagged(lines)
        # a non-synchronizing literal over the limit: the octets are on their way, close
        c.send(b"t9 APPEND INBOX {5000+}\r\n" + b"x" * 5000 + b"\r\n")
        lines = [await c.response(), await c.response()]
        assert lines[0].startswith(b"t9 BAD [TOOBIG]") and lines[1].startswith(b"* BYE")
        await c.close()
        # an unterminated literal: the session just waits for it; other sessions go on
        c2 = await RawImap.connect(env.address("imap"))
        await c2.greeting()
        await c2.login()
        c2.send(b"u1 APPEND INBOX {900+}\r\nonly a little")
        c3 = await RawImap.connect(env.address("imap"))
        await c3.greeting()
        await c3.login()
        await c3.ok("SELECT INBOX")
        await c2.close()
        await c3.ok("NOOP")
        await c3.close()


async def test_pipelined_commands_answer_in_order(client, env):
    for i in range(5):
        await deliver(env, message(f"m{i}"))
    await client.ok("SELECT INBOX")
    batch = b"".join(b"p%d FETCH %d (UID FLAGS)\r\np%d STORE %d +FLAGS (\\Seen)\r\n"
                     % (2 * i, i + 1, 2 * i + 1, i + 1) for i in range(5))
    client.send(batch + b"p99 NOOP\r\n")
    lines = await client.until_tagged("p99")
    tags = [r.split(b" ")[0] for r in lines if not r.startswith(b"* ")]
    assert tags == [b"p%d" % i for i in range(10)] + [b"p99"]


async def test_two_sessions_see_each_others_changes(client, env):
    await deliver(env, message("first"))
    other = await RawImap.connect(env.address("imap"))
    await other.greeting()
    await other.login()
    await client.ok("SELECT INBOX")
    await other.ok("SELECT INBOX")
    await other.ok("STORE 1 +FLAGS (\\Flagged)")
    a = message("second")
    other.send(b"o1 APPEND INBOX {%d+}\r\n%s\r\n" % (len(a), a))
    await other.until_tagged("o1")
    lines = await client.ok("NOOP")
    assert b"* 2 EXISTS\r\n" in lines
    assert b"* 1 FETCH (FLAGS (\\Flagged))\r\n" in lines
    # an expunge in another session is not reported during FETCH by sequence number
    await other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    await other.ok("EXPUNGE")
    lines = await client.ok("FETCH 1:* (UID)")
    assert not untagged(lines, b"EXPUNGE")
    assert lines[0].startswith(b"* 2 FETCH (UID 2")  # message 1 is gone, 2 keeps its number
    lines = await client.ok("NOOP")
    assert lines[0] == b"* 1 EXPUNGE\r\n"
    lines = await client.ok("FETCH 1 (UID)")
    assert lines[0] == b"* 1 FETCH (UID 2)\r\n"
    await other.close()


async def test_idle_reports_delivery_flags_and_expunge(client, env):
    await client.ok("SELECT INBOX")
    client.send(b"i1 IDLE\r\n")
    assert await client.response() == b"+ idling\r\n"
    await deliver(env, message("while idling"))
    assert await asyncio.wait_for(client.response(), 5) == b"* 1 EXISTS\r\n"
    other = await RawImap.connect(env.address("imap"))
    await other.greeting()
    await other.login()
    await other.ok("SELECT INBOX")
    await other.ok("STORE 1 +FLAGS (\\Deleted)")
    assert await asyncio.wait_for(client.response(), 5) == b"* 1 FETCH (FLAGS (\\Deleted))\r\n"
    await other.ok("EXPUNGE")
    assert await asyncio.wait_for(client.response(), 5) == b"* 1 EXPUNGE\r\n"
    client.send(b"DONE\r\n")
    assert await client.response() == b"i1 OK IDLE terminated\r\n"
    await other.close()


async def test_condstore_qresync_resync(client, env):
    for i in range(3):
        await deliver(env, message(f"m{i}"))
    await client.ok("ENABLE QRESYNC")
    lines = await client.ok("SELECT INBOX")
    uidvalidity = int([r for r in lines if b"UIDVALIDITY" in r][0].split()[3].rstrip(b"]"))
    modseq = int([r for r in lines if b"HIGHESTMODSEQ" in r][0].split()[3].rstrip(b"]"))
    await client.ok("STORE 2 +FLAGS (\\Seen)")
    await client.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
    lines = await client.ok("EXPUNGE")
    assert lines[0] == b"* VANISHED 3\r\n"
    lines = await client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert lines[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (")
    lines = await client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 3\r\n"
    await client.ok("UNSELECT")
    lines = await client.ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))")
    assert b"* VANISHED (EARLIER) 3\r\n" in lines
    assert any(r.startswith(b"* 2 FETCH (UID 2 FLAGS (\\Seen) MODSEQ (") for r in lines)
    lines = await client.ok("SELECT Archive")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed\r\n"


async def test_quota_and_status_size(client, env):
    await env.app.directory.set_quota(f"alice@{DOMAIN}", 10 * 1024 * 1024)
    await deliver(env, message("q"))
    lines = await client.ok("GETQUOTAROOT INBOX")
    assert lines[0] == b'* QUOTAROOT INBOX ""\r\n'
    assert lines[1] == b'* QUOTA "" (STORAGE 0 10240)\r\n'
    lines = await client.ok("STATUS INBOX (MESSAGES SIZE UNSEEN RECENT APPENDLIMIT)")
    assert lines[0] == b"* STATUS INBOX (MESSAGES 1 SIZE %d UNSEEN 1 RECENT 0 APPENDLIMIT %d)\r\n" \
        % (len(message("q")), env.app.config.limits.max_message_size)


async def test_compress_deflate(client, env):
    await deliver(env, message("zipped"))
    client.send(b"z1 COMPRESS DEFLATE\r\n")
    assert await client.response() == b"z1 OK DEFLATE active\r\n"
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    client.writer.write(deflate.compress(b"z2 SELECT INBOX\r\nz3 FETCH 1 BODY.PEEK[TEXT]\r\n")
                        + deflate.flush(zlib.Z_SYNC_FLUSH))
    data = b""
    while b"z3 OK" not in data:
        chunk = await asyncio.wait_for(client.reader.read(65536), 10)
        assert chunk
        data += inflate.decompress(chunk)
    assert b"* 1 EXISTS\r\n" in data
    assert b"* 1 FETCH (BODY[TEXT] {13}\r\nhello world\r\n)\r\n" in data


async def test_utf8_accept_and_rev2(client, env):
    await client.ok("ENABLE IMAP4rev2")
    await client.ok('CREATE "Größe"')
    lines = await client.ok('LIST "" "Gr*"')
    assert lines[0] == '* LIST (\\HasNoChildren) "/" "Größe"\r\n'.encode()
    await deliver(env, message("x"))
    lines = await client.ok("SELECT INBOX")
    assert not any(b"RECENT" in r for r in lines)
    lines = await client.ok("SEARCH ALL")
    assert lines[0] == b'* ESEARCH (TAG "t5") ALL 1\r\n'


async def test_daemon_survives_garbage_and_sessions_are_isolated(env):
    good = await RawImap.connect(env.address("imap"))
    await good.greeting()
    await good.login()
    bad = await RawImap.connect(env.address("imap"))
    await bad.greeting()
    bad.send(b"\x00\xff\xfe garbage\r\n" + b"A" * 100000 + b"\r\n" + b"* * *\r\n")
    resp = await bad.response()
    assert b"BAD" in resp
    await bad.close()
    await good.ok("NOOP")
    await good.close()


async def test_on_both_databases(tmp_path, database_url):
    async with daemon_env(tmp_path, database_url, overrides={"imap": {"tls": "starttls"}}) as env:
        await env.start("imap")
        c = await RawImap.connect(env.address("imap"))
        await c.greeting()
        await c.login()
        await deliver(env, message("db test", "searchable words"))
        await c.ok("SELECT INBOX")
        assert (await c.ok("SEARCH BODY searchable"))[0] == b"* SEARCH 1\r\n"
        await c.ok("STORE 1 +FLAGS (\\Deleted)")
        lines = await c.ok("EXPUNGE")
        assert lines[0] == b"* 1 EXPUNGE\r\n"
        await c.close()


def test_registry_resolves_imap():
    from mailserver import servers

    assert servers.resolve("imap") is not None
    assert "imap" in servers.available()


async def test_stop_ends_sessions(tmp_path):
    async with daemon_env(tmp_path, None, overrides={"imap": {"tls": "starttls"}}) as env:
        daemon = await env.start("imap")
        c = await RawImap.connect(env.address("imap"))
        await c.greeting()
        await c.login()
        await c.ok("SELECT INBOX")
        c.send(b"i IDLE\r\n")
        assert await c.response() == b"+ idling\r\n"
        plain = await RawImap.connect(env.address("imap"))
        await plain.greeting()
        await plain.login()
        await asyncio.wait_for(daemon.stop(), 15)
        env.running.pop("imap")
        for session in (c, plain):
            rest = await asyncio.wait_for(session.reader.read(), 10)
            assert rest == b"* BYE Server shutting down\r\n"
            await session.close()  # the BYE shows each ended itself, not by cancellation


async def test_status_follows_deliveries_without_select(env):
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    await c.login()
    for count in (1, 2):
        await deliver(env, message(f"s{count}"))

        async def arrived():
            lines = await c.ok("STATUS INBOX (MESSAGES UNSEEN)")
            return lines[0] == b"* STATUS INBOX (MESSAGES %d UNSEEN %d)\r\n" % (count, count)

        assert await wait_for(arrived)
    await c.close()


async def test_idle_sees_a_delivery_from_another_process(client, env):
    """A second App (its own bus, as another daemon process has) delivers. With an in-process
    bus ours never hears of it and the daemon's IdleWatcher poll must; with a cross-process
    bus either may report it first."""
    from mailserver.app import open_app

    await client.ok("SELECT INBOX")
    client.send(b"i1 IDLE\r\n")
    assert await client.response() == b"+ idling\r\n"
    other_app = await open_app(env.app.config)
    try:
        result = await other_app.deliverer.deliver(message("other process"), [f"alice@{DOMAIN}"])
        assert result.all_delivered
        assert await asyncio.wait_for(client.response(), 10) == b"* 1 EXISTS\r\n"
    finally:
        await other_app.close()
    client.send(b"DONE\r\n")
    assert await client.response() == b"i1 OK IDLE terminated\r\n"


async def test_search_modseq_objectid_and_uid_esearch(client, env):
    for i in range(3):
        await deliver(env, message(f"m{i}"))
    await client.ok("SELECT INBOX")
    lines = await client.ok("STORE 2 +FLAGS (\\Flagged)")
    lines = await client.ok("FETCH 2 (MODSEQ EMAILID THREADID)")
    modseq = int(lines[0].split(b"MODSEQ (")[1].split(b")")[0])
    email_id = lines[0].split(b"EMAILID (")[1].split(b")")[0].decode()
    lines = await client.ok(f"SEARCH MODSEQ {modseq}")
    assert lines[0] == b"* SEARCH 2 (MODSEQ %d)\r\n" % modseq
    lines = await client.ok(f"SEARCH EMAILID {email_id}")
    assert lines[0] == b"* SEARCH 2\r\n"
    lines = await client.ok("UID SEARCH RETURN (COUNT ALL) NOT FLAGGED")
    assert lines[0] == b'* ESEARCH (TAG "t6") UID ALL 1,3 COUNT 2\r\n'
    lines = await client.ok("SEARCH SMALLER 1 LARGER 100000")
    assert lines[0] == b"* SEARCH\r\n"


async def test_append_literal8_binary_message(client):
    raw = (b"From: a@example.test\r\nSubject: bin\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02\xff\r\n")
    client.send(b"t1 APPEND INBOX ~{%d+}\r\n%s\r\n" % (len(raw), raw))
    lines = await client.until_tagged("t1")
    assert tagged(lines).startswith(b"t1 OK [APPENDUID ")
    await client.ok("SELECT INBOX")
    client.n = 2
    lines = await client.ok("FETCH 1 (BINARY.PEEK[1] RFC822.SIZE)")
    assert lines[0] == b"* 1 FETCH (BINARY[1] ~{6}\r\n\x00\x01\x02\xff\r\n RFC822.SIZE %d)\r\n" \
        % len(raw)


async def test_flags_changed_and_expunged_elsewhere_while_selected(client, env):
    for i in range(3):
        await deliver(env, message(f"m{i}"))
    other = await RawImap.connect(env.address("imap"))
    await other.greeting()
    await other.login()
    await client.ok("SELECT INBOX")
    await other.ok("SELECT INBOX")
    await other.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    await other.ok("EXPUNGE")
    # STORE by sequence number: no EXPUNGE yet, message 2 still counts but is skipped
    lines = await client.ok("STORE 1:3 +FLAGS (\\Answered)")
    assert not untagged(lines, b"EXPUNGE")
    assert [r.split(b" FETCH")[0] for r in lines[:-1]] == [b"* 1", b"* 3"]
    lines = await client.ok("SEARCH ANSWERED")
    assert lines[0] == b"* SEARCH 1 3\r\n"
    lines = await client.ok("UID SEARCH ANSWERED")  # UID commands may report the expunge
    assert lines[0] == b"* SEARCH 1 3\r\n" and lines[1] == b"* 2 EXPUNGE\r\n"
    lines = await client.ok("SEARCH ANSWERED")
    assert lines[0] == b"* SEARCH 1 2\r\n"
    await other.close()
