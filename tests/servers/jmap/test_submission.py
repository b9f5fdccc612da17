"""EmailSubmission (RFC 8621 §7): deliveryStatus from the outbound queue, /changes, /query and
/queryChanges over a real JMAP daemon.

The queue side is driven with the queue's own store functions (``claim``, ``defer``,
``finish_many``) and the worker's ``Outcome`` values — the steps ``QueueWorker`` takes after
an SMTP exchange — because no remote SMTP server is reachable from the tests.
"""

from __future__ import annotations

import time

from jmap_testlib import CORE, MAIL

from mailserver.queue import store as q
from mailserver.queue.worker import DELIVERED, PERMANENT, Outcome
from mailserver.store import submissions

SUB = "urn:ietf:params:jmap:submission"
USING = [CORE, MAIL, SUB]


async def submit(jmap, subject: str, to: list[str]) -> tuple[str, str, str]:
    """Create a draft and send it; returns (submission id, email id, thread id)."""
    drafts = await jmap.mailbox("drafts")
    identity = (await jmap.ok("Identity/get", {}, USING))["list"][0]["id"]
    responses = await jmap.request([
        ["Email/set", {"accountId": jmap.account, "create": {"d": {
            "mailboxIds": {drafts: True}, "from": [{"email": "alice@example.test"}],
            "to": [{"email": a} for a in to], "subject": subject,
            "messageId": [f"{subject.replace(' ', '-')}@example.test"],
            "bodyValues": {"b": {"value": subject}}, "textBody": [{"partId": "b"}]}}}, "0"],
        ["EmailSubmission/set", {"accountId": jmap.account, "create": {
            "s": {"identityId": identity, "emailId": "#d"}}}, "1"]], USING)
    created = responses[1][1]["created"]["s"]
    email = responses[0][1]["created"]["d"]
    return created["id"], email["id"], email["threadId"]


async def status_of(jmap, sid: str) -> dict:
    [s] = (await jmap.ok("EmailSubmission/get", {"ids": [sid],
                                                 "properties": ["deliveryStatus"]},
                         USING))["list"]
    return s["deliveryStatus"]


async def test_delivery_status_follows_the_queue(jmap_any):
    jmap = jmap_any
    app = jmap.env.app
    sid, _e, _t = await submit(jmap, "Status", ["bob@example.test", "x@remote.example",
                                                 "y@remote.example"])
    st = await status_of(jmap, sid)
    assert st["bob@example.test"]["delivered"] == "yes"
    assert st["x@remote.example"] == {"smtpReply": "250 2.0.0 queued", "delivered": "queued",
                                      "displayed": "unknown"}
    now = int(time.time())
    async with app.db.write() as conn:
        claimed = {c.recipient: c for c in await q.claim(conn, owner="w1", now=now,
                                                         lease_seconds=600, limit=10)}
    assert set(claimed) == {"x@remote.example", "y@remote.example"}
    # x: a temporary failure; y: delivered — recorded the way the worker records them
    async with app.db.write() as conn:
        await q.defer(conn, claimed["x@remote.example"], now=now, next_attempt_at=now + 60,
                      status="4.7.1", error="451 4.7.1 greylisted, try again later")
        done = [Outcome(claimed["y@remote.example"], DELIVERED, "2.0.0",
                        "250 2.0.0 Ok: queued as 4F3A", "mx.remote.example")]
        await q.finish_many(conn, [o.rcpt for o in done], now)
        assert await submissions.record_final_outcomes(conn, done) == 1
    st = await status_of(jmap, sid)
    assert st["x@remote.example"] == {"smtpReply": "451 4.7.1 greylisted, try again later",
                                      "delivered": "queued", "displayed": "unknown"}
    assert st["y@remote.example"] == {"smtpReply": "250 2.0.0 Ok: queued as 4F3A",
                                      "delivered": "yes", "displayed": "unknown"}
    # x fails for good on the next attempt
    later = now + 120
    async with app.db.write() as conn:
        [x] = await q.claim(conn, owner="w2", now=later, lease_seconds=600, limit=10)
        failed = [Outcome(x, PERMANENT, "5.1.1", "550 5.1.1 <x@remote.example>: no such user",
                          "mx.remote.example")]
        await q.finish_many(conn, [o.rcpt for o in failed], later)
        await submissions.record_final_outcomes(conn, failed)
    st = await status_of(jmap, sid)
    assert st["x@remote.example"]["delivered"] == "no"
    assert st["x@remote.example"]["smtpReply"].startswith("550 5.1.1")
    assert st["bob@example.test"]["delivered"] == "yes"
    # a recipient that left the queue without a recorded outcome is not claimed to be queued
    sid2, _e, _t = await submit(jmap, "Lost", ["z@remote.example"])
    async with app.db.write() as conn:
        [z] = await q.claim(conn, owner="w3", now=later, lease_seconds=600, limit=10)
        await q.finish_many(conn, [z], later)
    assert (await status_of(jmap, sid2))["z@remote.example"]["delivered"] == "unknown"


async def test_changes(jmap):
    state = (await jmap.ok("EmailSubmission/get", {"ids": []}, USING))["state"]
    s1, _e, _t = await submit(jmap, "One", ["bob@example.test"])
    s2, _e, _t = await submit(jmap, "Two", ["bob@example.test"])
    ch = await jmap.ok("EmailSubmission/changes", {"sinceState": state}, USING)
    assert ch["created"] == [s1, s2] and ch["destroyed"] == []
    r = await jmap.ok("EmailSubmission/set", {"destroy": [s1]}, USING)
    assert r["destroyed"] == [s1]
    ch2 = await jmap.ok("EmailSubmission/changes", {"sinceState": ch["newState"]}, USING)
    assert ch2["destroyed"] == [s1] and ch2["created"] == []
    # created and destroyed inside the window: not reported at all
    ch3 = await jmap.ok("EmailSubmission/changes", {"sinceState": state}, USING)
    assert ch3["created"] == [s2] and ch3["destroyed"] == []
    paged = await jmap.ok("EmailSubmission/changes", {"sinceState": state, "maxChanges": 1},
                          USING)
    assert paged["hasMoreChanges"] is True and len(paged["created"]) == 1
    _name, err = await jmap.call("EmailSubmission/changes", {"sinceState": "nope"}, USING)
    assert err["type"] == "cannotCalculateChanges"


async def test_query_and_query_changes(jmap):
    s1, _e1, t1 = await submit(jmap, "Alpha", ["bob@example.test"])
    s2, e2, _t2 = await submit(jmap, "Beta", ["carol@example.test"])
    s3, e3, _t3 = await submit(jmap, "Gamma", ["bob@example.test"])
    identity = (await jmap.ok("Identity/get", {}, USING))["list"][0]["id"]
    q_all = await jmap.ok("EmailSubmission/query", {"calculateTotal": True}, USING)
    assert q_all["ids"] == [s1, s2, s3] and q_all["total"] == 3
    assert q_all["canCalculateChanges"] is True
    by_email = await jmap.ok("EmailSubmission/query", {"filter": {"emailIds": [e2, e3]}}, USING)
    assert by_email["ids"] == [s2, s3]
    by_thread = await jmap.ok("EmailSubmission/query", {"filter": {"threadIds": [t1]}}, USING)
    assert by_thread["ids"] == [s1]
    assert (await jmap.ok("EmailSubmission/query", {"filter": {
        "identityIds": [identity], "undoStatus": "final"}}, USING))["ids"] == [s1, s2, s3]
    assert (await jmap.ok("EmailSubmission/query", {"filter": {"undoStatus": "pending"}},
                          USING))["ids"] == []
    assert (await jmap.ok("EmailSubmission/query", {"filter": {
        "after": "2000-01-01T00:00:00Z", "before": "2999-01-01T00:00:00Z"}},
        USING))["ids"] == [s1, s2, s3]
    assert (await jmap.ok("EmailSubmission/query", {"filter": {
        "before": "2000-01-01T00:00:00Z"}}, USING))["ids"] == []
    desc = await jmap.ok("EmailSubmission/query", {"sort": [
        {"property": "emailId", "isAscending": False}]}, USING)
    assert desc["ids"] == [s3, s2, s1]
    sent = await jmap.ok("EmailSubmission/query", {"sort": [{"property": "sentAt"}],
                                                   "position": 1, "limit": 1}, USING)
    assert sent["ids"] == [s2] and sent["position"] == 1
    anchored = await jmap.ok("EmailSubmission/query", {"anchor": s2, "anchorOffset": 1},
                             USING)
    assert anchored["ids"] == [s3] and anchored["position"] == 2
    for bad, kind in (({"filter": {"subject": "x"}}, "unsupportedFilter"),
                      ({"sort": [{"property": "size"}]}, "unsupportedSort"),
                      ({"filter": {"before": "yesterday"}}, "invalidArguments"),
                      ({"anchor": "s999"}, "anchorNotFound")):
        name, err = await jmap.call("EmailSubmission/query", bad, USING)
        assert (name, err["type"]) == ("error", kind), bad
    # queryChanges: apply removed/added to the old result and get the new one
    query = {"filter": {"identityIds": [identity]},
             "sort": [{"property": "emailId", "isAscending": False}]}
    old = await jmap.ok("EmailSubmission/query", query, USING)
    await jmap.ok("EmailSubmission/set", {"destroy": [s2]}, USING)
    s4, _e, _t = await submit(jmap, "Delta", ["bob@example.test"])
    ch = await jmap.ok("EmailSubmission/queryChanges", {
        **query, "sinceQueryState": old["queryState"], "calculateTotal": True}, USING)
    new = await jmap.ok("EmailSubmission/query", query, USING)
    assert new["ids"] == [s4, s3, s1]
    assert ch["newQueryState"] == new["queryState"] and ch["total"] == 3
    result = [i for i in old["ids"] if i not in set(ch["removed"])]
    for a in ch["added"]:
        result.insert(a["index"], a["id"])
    assert result == new["ids"]
    name, err = await jmap.call("EmailSubmission/queryChanges", {
        **query, "sinceQueryState": old["queryState"], "maxChanges": 1}, USING)
    assert err["type"] == "tooManyChanges"


async def test_bad_input_gets_jmap_errors(jmap):
    """Wrong types anywhere are invalidArguments (or the RFC's specific error), never
    serverFail, and the request goes on."""
    vac = "urn:ietf:params:jmap:vacationresponse"
    using = [*USING, vac]
    calls = [
        ("Identity/set", {"destroy": [{"x": 1}]}, "invalidArguments"),
        ("Identity/set", {"create": ["not", "a", "map"]}, "invalidArguments"),
        ("Identity/get", {"ids": [1, 2]}, "invalidArguments"),
        ("Identity/changes", {"sinceState": 5}, "invalidArguments"),
        ("VacationResponse/set", {"destroy": [[]]}, "invalidArguments"),
        ("VacationResponse/set", {"update": "singleton"}, "invalidArguments"),
        ("VacationResponse/get", {"properties": ["nope"]}, "invalidArguments"),
        ("EmailSubmission/set", {"destroy": [None]}, "invalidArguments"),
        ("EmailSubmission/get", {"ids": "s1"}, "invalidArguments"),
        ("EmailSubmission/query", {"filter": "x"}, "invalidArguments"),
        ("EmailSubmission/query", {"filter": {"operator": "XOR", "conditions": []}},
         "invalidArguments"),
        ("EmailSubmission/query", {"filter": {"emailIds": "e1"}}, "invalidArguments"),
        ("EmailSubmission/query", {"position": "1"}, "invalidArguments"),
        ("EmailSubmission/query", {"sort": [{"property": "sentAt", "isAscending": 1}]},
         "invalidArguments"),
        ("EmailSubmission/queryChanges", {"sinceQueryState": "1", "maxChanges": 0},
         "invalidArguments"),
        ("EmailSubmission/queryChanges", {}, "invalidArguments"),
    ]
    responses = await jmap.request(
        [[name, {"accountId": jmap.account, **args}, str(i)]
         for i, (name, args, _kind) in enumerate(calls)]
        + [["Identity/get", {"accountId": jmap.account}, "last"]], using)
    for (name, _args, kind), (rname, result, _cid) in zip(calls, responses):
        assert (rname, result.get("type")) == ("error", kind), (name, _args, result)
    assert responses[-1][0] == "Identity/get"
    # a deep or mixed filter works
    ok = await jmap.ok("EmailSubmission/query", {"filter": {"operator": "NOT", "conditions": [
        {"operator": "AND", "conditions": [{"undoStatus": "final"},
                                           {"before": "2000-01-01T00:00:00Z"}]}]}}, USING)
    assert ok["ids"] == []
