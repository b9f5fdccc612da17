"""VacationResponse (RFC 8621 §8) over a real JMAP daemon, and its auto-replies (RFC 3834 /
RFC 5230) for mail that arrives over LMTP (smtplib) and JMAP submission."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
import time

from jmap_testlib import CORE, MAIL, basic
from sqlalchemy import select

from mailserver.servers.jmap import ids
from mailserver.store import schema

VAC = "urn:ietf:params:jmap:vacationresponse"
SUB = "urn:ietf:params:jmap:submission"
USING = [CORE, MAIL, VAC]


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


async def set_vacation(jmap, **patch) -> dict:
    r = await jmap.ok("VacationResponse/set", {"update": {"singleton": patch}}, USING)
    assert r["updated"] == {"singleton": None}, r
    return r


def _lmtp(address, mail_from: str, rcpts: list[str], raw: bytes) -> dict:
    with smtplib.LMTP(*address, timeout=60) as s:
        return s.sendmail(mail_from, rcpts, raw)


async def lmtp(jmap, mail_from: str, raw: bytes, rcpts: tuple[str, ...] = ("alice@example.test",)
               ) -> None:
    refused = await asyncio.to_thread(_lmtp, jmap.env.address("lmtp"), mail_from, list(rcpts),
                                      raw)
    assert refused == {}
    await jmap.env.app.deliverer.auto_responder.wait_idle()  # the replies of this delivery


def msg(sender: str, subject: str = "Hello", *, to: str = "Alice <alice@example.test>",
        extra: str = "", mid: str | None = None) -> bytes:
    mid = mid or f"{abs(hash((sender, subject, extra, to)))}@remote.example"
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n{extra}\r\nHi Alice\r\n").encode()


async def queued_replies(jmap) -> list[tuple[str, bytes]]:
    """(recipient, raw) of the null-sender messages in the outbound queue."""
    m, r = schema.queue_messages, schema.queue_recipients
    async with jmap.env.app.db.read() as conn:
        rows = (await conn.execute(select(r.c.recipient, m.c.blob_id).join(
            m, m.c.id == r.c.message_id).where(m.c.sender == "").order_by(m.c.id))).all()
    return [(row.recipient, await jmap.env.app.blobs.get(row.blob_id)) for row in rows]


async def emails_of(jmap, user: str) -> list[bytes]:
    e = schema.emails
    async with jmap.env.app.db.read() as conn:
        blobs = (await conn.execute(select(e.c.blob_id).where(
            e.c.account_id == jmap.env.account_ids[user]).order_by(e.c.id))).scalars().all()
    return [await jmap.env.app.blobs.get(b) for b in blobs]


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


# ---------------------------------------------------------------------------------------------
# VacationResponse/get and /set
# ---------------------------------------------------------------------------------------------

async def test_session_and_default(jmap):
    session = await jmap.session()
    assert VAC in session["capabilities"]
    assert session["primaryAccounts"][VAC] == jmap.account
    assert VAC in session["accounts"][jmap.account]["accountCapabilities"]
    r = await jmap.ok("VacationResponse/get", {"ids": None}, USING)
    assert r["list"] == [{"id": "singleton", "isEnabled": False, "fromDate": None,
                          "toDate": None, "subject": None, "textBody": None, "htmlBody": None}]
    assert r["notFound"] == []
    r = await jmap.ok("VacationResponse/get", {"ids": ["singleton", "other"],
                                               "properties": ["isEnabled"]}, USING)
    assert r["list"] == [{"id": "singleton", "isEnabled": False}]
    assert r["notFound"] == ["other"]
    # the capability must be in "using"
    name, err = await jmap.call("VacationResponse/get", {}, [CORE, MAIL])
    assert (name, err["type"]) == ("error", "unknownMethod")


async def test_set_and_state(jmap):
    before = (await jmap.ok("VacationResponse/get", {}, USING))["state"]
    r = await set_vacation(jmap, isEnabled=True, fromDate="2026-12-20T00:00:00Z",
                           toDate="2027-01-05T00:00:00Z", subject="Away",
                           textBody="Back in January.", htmlBody="<p>Back in January.</p>")
    assert r["oldState"] == before and r["newState"] != before
    got = await jmap.ok("VacationResponse/get", {}, USING)
    assert got["state"] == r["newState"]
    assert got["list"][0] == {"id": "singleton", "isEnabled": True,
                              "fromDate": "2026-12-20T00:00:00Z",
                              "toDate": "2027-01-05T00:00:00Z", "subject": "Away",
                              "textBody": "Back in January.",
                              "htmlBody": "<p>Back in January.</p>"}
    # a partial update keeps the rest; null clears
    await set_vacation(jmap, toDate=None, htmlBody=None)
    got = (await jmap.ok("VacationResponse/get", {}, USING))["list"][0]
    assert (got["toDate"], got["htmlBody"], got["subject"]) == (None, None, "Away")
    # the singleton can be neither created nor destroyed; bad values are invalidProperties
    r = await jmap.ok("VacationResponse/set", {
        "create": {"x": {"isEnabled": True}}, "destroy": ["singleton"],
        "update": {"singleton": {"isEnabled": "yes", "fromDate": "tomorrow", "foo": 1},
                   "nope": {"isEnabled": False}}}, USING)
    assert r["notCreated"]["x"]["type"] == "singleton"
    assert r["notDestroyed"]["singleton"]["type"] == "singleton"
    assert r["notUpdated"]["singleton"]["type"] == "invalidProperties"
    assert sorted(r["notUpdated"]["singleton"]["properties"]) == ["foo", "fromDate",
                                                                   "isEnabled"]
    assert r["notUpdated"]["nope"]["type"] == "notFound"
    assert r["updated"] is None
    name, err = await jmap.call("VacationResponse/set", {
        "ifInState": "1", "update": {"singleton": {"isEnabled": False}}}, USING)
    assert (name, err["type"]) == ("error", "stateMismatch")
    assert (await jmap.ok("VacationResponse/get", {}, USING))["list"][0]["isEnabled"] is True


# ---------------------------------------------------------------------------------------------
# auto-replies
# ---------------------------------------------------------------------------------------------

async def test_reply_to_local_sender_once(jmap_any):
    """bob writes to alice (LMTP, then JMAP submission); alice is away: bob gets one reply."""
    jmap = jmap_any
    await jmap.env.start("lmtp")
    await set_vacation(jmap, isEnabled=True, subject="Out of office",
                       textBody="I am away until Monday.")
    raw = msg("Bob <bob@example.test>", "Lunch?", mid="lunch-1@example.test")
    await lmtp(jmap, "bob@example.test", raw)
    replies = await emails_of(jmap, "bob")
    assert len(replies) == 1
    reply = parse(replies[0])
    assert reply["Subject"] == "Out of office"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<lunch-1@example.test>"
    assert "<lunch-1@example.test>" in reply["References"]
    assert reply["To"] == "bob@example.test"
    assert "alice@example.test" in reply["From"]
    assert replies[0].startswith(b"Return-Path: <>\r\n")  # null sender (RFC 3834 §3.3)
    assert "I am away until Monday." in reply.get_body(("plain",)).get_content()
    # alice's own delivery is untouched
    assert len(await emails_of(jmap, "alice")) == 1
    # a second message within the period: no second reply (RFC 5230 §4.2) ...
    await lmtp(jmap, "bob@example.test", msg("Bob <bob@example.test>", "Lunch? (2)"))
    # ... also when bob sends through JMAP (the submission writes Return-Path)
    bob = basic("bob")
    aid = f"a{jmap.env.account_ids['bob']}"
    using = [CORE, MAIL, SUB]
    status, body = await jmap.post({"using": using, "methodCalls": [
        ["Identity/get", {"accountId": aid}, "i"]]}, auth=bob)
    assert status == 200
    identity = body["methodResponses"][0][1]["list"][0]["id"]
    status, body = await jmap.post({"using": using, "methodCalls": [
        ["Mailbox/get", {"accountId": aid, "ids": None}, "0"]]}, auth=bob)
    drafts = next(m["id"] for m in body["methodResponses"][0][1]["list"]
                  if m["role"] == "drafts")
    status, body = await jmap.post({"using": using, "methodCalls": [
        ["Email/set", {"accountId": aid, "create": {"d": {
            "mailboxIds": {drafts: True}, "from": [{"email": "bob@example.test"}],
            "to": [{"email": "alice@example.test"}], "subject": "Via JMAP",
            "bodyValues": {"b": {"value": "hi"}}, "textBody": [{"partId": "b"}]}}}, "1"],
        ["EmailSubmission/set", {"accountId": aid, "create": {"s": {
            "identityId": identity, "emailId": "#d"}}}, "2"]]}, auth=bob)
    assert body["methodResponses"][1][1]["created"]["s"]["id"], body
    await jmap.env.app.deliverer.auto_responder.wait_idle()
    assert len(await emails_of(jmap, "alice")) == 3
    assert len(await emails_of(jmap, "bob")) == 2  # the reply + bob's draft/sent copy
    # a changed VacationResponse starts over: the next message is answered again
    await set_vacation(jmap, subject="Still away")
    await lmtp(jmap, "bob@example.test", msg("Bob <bob@example.test>", "Lunch? (3)"))
    subjects = [parse(r)["Subject"] for r in await emails_of(jmap, "bob")]
    assert subjects.count("Out of office") == 1 and subjects.count("Still away") == 1


async def test_reply_to_smtp_submission_from_local_user(jmap):
    """bob sends with his mail client (SMTP submission, STARTTLS + AUTH): the local delivery
    carries Return-Path, so alice's vacation answers bob."""
    from mailserver.testing.daemons import PASSWORD

    await jmap.env.start("submission")
    await set_vacation(jmap, isEnabled=True, subject="Away")

    def send() -> dict:
        with smtplib.SMTP(*jmap.env.address("submission"), timeout=60) as s:
            s.starttls(context=jmap.env.client_tls())
            s.login("bob@example.test", PASSWORD)
            return s.sendmail("bob@example.test", ["alice@example.test"],
                              msg("Bob <bob@example.test>", "From Thunderbird"))
    assert await asyncio.to_thread(send) == {}
    await jmap.env.app.deliverer.auto_responder.wait_idle()
    [reply] = await emails_of(jmap, "bob")
    assert parse(reply)["Subject"] == "Away"
    [received] = await emails_of(jmap, "alice")
    assert received.startswith(b"Return-Path: <bob@example.test>\r\n")


async def test_reply_to_remote_sender_through_queue(jmap):
    await jmap.env.start("lmtp")
    await jmap.env.app.directory.add_dkim_key("example.test", "s1")
    await set_vacation(jmap, isEnabled=True, textBody="Away.", htmlBody="<b>Away.</b>")
    raw = msg("Carol <carol@remote.example>", "Question", mid="q1@remote.example")
    await lmtp(jmap, "carol@remote.example", raw)
    await lmtp(jmap, "carol@remote.example", msg("Carol <carol@remote.example>", "Again"))
    [(rcpt, reply_raw)] = await queued_replies(jmap)
    assert rcpt == "carol@remote.example"
    reply = parse(reply_raw)
    assert reply["Subject"] == "Auto: Question"  # RFC 3834 §3.1.5
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<q1@remote.example>"
    assert "d=example.test" in reply["DKIM-Signature"].replace(" ", "")
    assert reply.get_body(("html",)).get_content().strip() == "<b>Away.</b>"
    async with jmap.env.app.db.read() as conn:
        rows = (await conn.execute(select(schema.vacation_replies))).all()
    assert [(r.account_id, r.sender) for r in rows] == [
        (jmap.env.account_ids["alice"], "carol@remote.example")]
    # another process (or this one after a restart) knows carol was answered
    from mailserver.app import open_app

    other = await open_app(jmap.env.app.config)
    try:
        raw = b"Return-Path: <carol@remote.example>\r\n" + msg("carol@remote.example", "3rd")
        assert (await other.deliverer.deliver(raw, ["alice@example.test"])).all_delivered
        await other.deliverer.auto_responder.wait_idle()
        # ... while a new sender is answered by it
        raw = b"Return-Path: <dan@remote.example>\r\n" + msg("dan@remote.example", "Hi")
        assert (await other.deliverer.deliver(raw, ["alice@example.test"])).all_delivered
        await other.deliverer.auto_responder.wait_idle()
    finally:
        await other.close()
    assert [r for r, _ in await queued_replies(jmap)] == ["carol@remote.example",
                                                          "dan@remote.example"]


async def test_no_reply_to_lists_bulk_robots_or_bcc(jmap):
    await jmap.env.start("lmtp")
    await set_vacation(jmap, isEnabled=True, textBody="Away.")
    cases = [
        ("", msg("Daemon <x@remote.example>")),  # null sender
        ("news@remote.example", msg("news@remote.example", extra="List-Id: <l.remote>\r\n")),
        ("u1@remote.example", msg("u1@remote.example",
                                  extra="List-Unsubscribe: <mailto:u@remote.example>\r\n")),
        ("u2@remote.example", msg("u2@remote.example", extra="List-Post: NO\r\n")),
        ("bulk@remote.example", msg("bulk@remote.example", extra="Precedence: bulk\r\n")),
        ("junk@remote.example", msg("junk@remote.example", extra="Precedence: junk\r\n")),
        ("robot@remote.example", msg("robot@remote.example",
                                     extra="Auto-Submitted: auto-generated\r\n")),
        ("ooo@remote.example", msg("ooo@remote.example",
                                   extra="Auto-Submitted: auto-replied\r\n")),
        ("MAILER-DAEMON@remote.example", msg("MAILER-DAEMON@remote.example")),
        ("owner-list@remote.example", msg("owner-list@remote.example")),
        ("list-request@remote.example", msg("list-request@remote.example")),
        # alice only in Bcc (RFC 5230 §4.5)
        ("bcc@remote.example", msg("bcc@remote.example", to="Someone <s@remote.example>")),
    ]
    for mail_from, raw in cases:
        await lmtp(jmap, mail_from, raw)
    assert await queued_replies(jmap) == []
    # the control: Auto-Submitted: no and alice in Cc are answered
    await lmtp(jmap, "ok@remote.example",
               msg("ok@remote.example", to="s@remote.example",
                   extra="Cc: alice@example.test\r\nAuto-Submitted: no\r\n"))
    assert [r for r, _ in await queued_replies(jmap)] == ["ok@remote.example"]
    assert len(await emails_of(jmap, "alice")) == len(cases) + 1


async def test_date_window_and_period(jmap):
    await jmap.env.start("lmtp")
    responder = jmap.env.app.deliverer.auto_responder
    now = time.time()
    await set_vacation(jmap, isEnabled=True, fromDate=utc(now + 86400), textBody="Soon away.")
    await lmtp(jmap, "a@remote.example", msg("a@remote.example"))
    await set_vacation(jmap, fromDate=utc(now - 2 * 86400), toDate=utc(now - 86400))
    await lmtp(jmap, "b@remote.example", msg("b@remote.example"))
    await set_vacation(jmap, isEnabled=False, toDate=None)
    await lmtp(jmap, "c@remote.example", msg("c@remote.example"))
    assert await queued_replies(jmap) == []
    await set_vacation(jmap, isEnabled=True, toDate=utc(now + 86400))
    await lmtp(jmap, "d@remote.example", msg("d@remote.example"))
    await lmtp(jmap, "d@remote.example", msg("d@remote.example", "Again"))
    assert [r for r, _ in await queued_replies(jmap)] == ["d@remote.example"]
    # eight days later (default period 7 days) d is answered again
    await set_vacation(jmap, toDate=None)
    await lmtp(jmap, "d@remote.example", msg("d@remote.example", "First"))
    assert len(await queued_replies(jmap)) == 2  # the update cleared the record
    responder.clock = lambda: time.time() + 8 * 86400
    await lmtp(jmap, "d@remote.example", msg("d@remote.example", "Later"))
    await lmtp(jmap, "d@remote.example", msg("d@remote.example", "Later 2"))
    assert [r for r, _ in await queued_replies(jmap)] == ["d@remote.example"] * 3


async def test_state_is_shared_with_changes(jmap):
    """A VacationResponse update moves the account state like any other change."""
    state = (await jmap.ok("Mailbox/get", {"ids": []}))["state"]
    r = await set_vacation(jmap, isEnabled=True)
    assert ids.parse_state(r["newState"]) > ids.parse_state(state)
    changes = await jmap.ok("Mailbox/changes", {"sinceState": state})
    assert changes["created"] == [] and changes["updated"] == []


async def test_reply_over_smtp_mx(tmp_path):
    """The whole path: a remote server delivers to alice over the SMTP MX port (SPF checked
    against a real DNS server); alice's vacation reply waits in the outbound queue."""
    from mailserver.testing.daemons import daemon_env
    from mailserver.testing.dnsserver import KnotServer, find_knot
    from mailserver.testing.tools import require_tool

    if find_knot() is None:
        require_tool("knotd", "Debian package knot")
    dns = KnotServer.start({"pass.test": ["@ TXT \"v=spf1 ip4:127.0.0.1 -all\""]})
    try:
        overrides = {"dns": {"nameservers": [dns.host], "port": dns.port, "timeout": "2s"}}
        async with daemon_env(tmp_path, overrides=overrides) as env:
            await env.start("mx")
            await env.start("jmap")
            import aiohttp
            from jmap_testlib import Jmap
            host, port = env.address("jmap")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                jmap = Jmap(env, f"http://{host}:{port}", http, basic("alice"),
                            f"a{env.account_ids['alice']}")
                await set_vacation(jmap, isEnabled=True, subject="Away")

                def send() -> dict:
                    with smtplib.SMTP(*env.address("mx"), timeout=60) as s:
                        return s.sendmail("dave@pass.test", ["alice@example.test"],
                                          msg("Dave <dave@pass.test>", "Meeting"))
                assert await asyncio.to_thread(send) == {}
                await env.app.deliverer.auto_responder.wait_idle()
                [(rcpt, raw)] = await queued_replies(jmap)
                assert rcpt == "dave@pass.test"
                assert parse(raw)["Subject"] == "Away"
                assert parse(raw)["Auto-Submitted"] == "auto-replied"
    finally:
        dns.stop()


async def test_push_announces_vacation_and_identity_changes(jmap):
    """EventSource (RFC 8620 §7.3) StateChange for the VacationResponse and Identity types."""
    import json

    url = jmap.base + "/jmap/eventsource/?types=VacationResponse,Identity&closeafter=no&ping=0"
    async with jmap.http.get(url, headers={"Authorization": jmap.auth}) as resp:
        assert resp.status == 200  # subscribed before the headers were sent

        async def next_change() -> dict:
            while True:
                line = (await resp.content.readline()).decode()
                if line.startswith("data: "):
                    return json.loads(line[6:])

        r = await set_vacation(jmap, isEnabled=True)
        change = await asyncio.wait_for(next_change(), 30)
        assert change["changed"][jmap.account] == {"VacationResponse": r["newState"]}
        await jmap.env.app.directory.add_alias("help@example.test", "alice@example.test")
        got = await jmap.ok("Identity/get", {}, [CORE, MAIL, SUB])  # syncs the new default
        change = await asyncio.wait_for(next_change(), 30)
        assert change["changed"][jmap.account] == {"Identity": got["state"]}
