"""The list-view fast paths (a mail client's Email/query + Email/get of a page) give the same
answers as the general paths, over real HTTP and on every engine.

- Email/get of ``emailview.LIST_PROPERTIES`` only is served from the summary cache plus fresh
  keywords/mailboxes; asking for one more property (``textBody``) takes the general path, so
  the two are compared object by object.
- Email/query of one mailbox by receivedAt (no collapse/anchor/total) is one indexed statement;
  ``calculateTotal`` takes the general path.
"""

from __future__ import annotations

import json

from jmap_testlib import USING, message

LIST_PROPS = ["id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt",
              "messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc",
              "replyTo", "subject", "sentAt", "hasAttachment", "preview"]

VARIED = [
    message("Plain", "one"),
    # no Subject, no Date, no Message-ID, an encoded name, groups, cc/bcc/reply-to/sender
    (b"From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>\r\n"
     b"Sender: Secretary <sec@example.test>\r\nReply-To: list@example.test\r\n"
     b"To: alice@example.test, Team: carol@example.test, dave@example.test;\r\n"
     b"Cc: \"Carol, C.\" <carol@example.test>\r\nBcc: hidden@example.test\r\n"
     b"In-Reply-To: <a@example.test>\r\nReferences: <root@example.test> <a@example.test>\r\n"
     b"\r\nno headers to speak of\r\n"),
    (b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: With attachment\r\n"
     b"Message-ID: <att@example.test>\r\nDate: Tue, 24 Nov 2026 08:30:00 +0200\r\n"
     b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
     b"--b\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
     b"--b\r\nContent-Type: application/pdf; name=x.pdf\r\n"
     b"Content-Disposition: attachment; filename=x.pdf\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"),
]


async def _raw(jmap, calls: list) -> list:
    """The method responses, after checking that the response text is exactly what
    ``json.dumps`` makes of it (no duplicate members, nothing spliced wrong)."""
    async with jmap.http.post(jmap.base + "/jmap/api/", headers={"Authorization": jmap.auth},
                              json={"using": USING, "methodCalls": calls}) as r:
        assert r.status == 200 and r.content_type == "application/json"
        text = await r.text()
    body = json.loads(text, object_pairs_hook=_no_duplicates)
    assert text == json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return body["methodResponses"]


def _no_duplicates(pairs: list) -> dict:
    assert len({k for k, _ in pairs}) == len(pairs), pairs
    return dict(pairs)


async def _all_ids(jmap) -> list[str]:
    got = await jmap.ok("Email/query", {"sort": [{"property": "receivedAt"}],
                                        "calculateTotal": True})
    return got["ids"]


async def test_list_get_equals_general_get(jmap_any):
    jmap = jmap_any
    for k, raw in enumerate(VARIED):
        await jmap.deliver(raw, received_at=1_800_000_000 + k)
    ids = await _all_ids(jmap)
    assert len(ids) == len(VARIED)
    want = [*ids, "e999999", "bogus"]
    for _ in range(2):  # the second round is served from the cache
        fast = await jmap.ok("Email/get", {"ids": want, "properties": LIST_PROPS})
        slow = await jmap.ok("Email/get", {"ids": want, "properties": [*LIST_PROPS,
                                                                       "textBody"]})
        assert fast["notFound"] == slow["notFound"] == ["e999999", "bogus"]
        assert fast["state"] == slow["state"]
        assert len(fast["list"]) == len(VARIED)
        for f, s in zip(fast["list"], slow["list"]):
            s.pop("textBody")
            assert f == s
    by_id = {e["id"]: e for e in fast["list"]}
    odd = by_id[ids[1]]
    assert odd["subject"] is None and odd["messageId"] is None and odd["sentAt"] is None
    assert odd["references"] == ["root@example.test", "a@example.test"]
    assert odd["from"] == [{"name": "Jörg", "email": "joerg@example.test"}]
    assert by_id[ids[2]]["hasAttachment"] is True
    # the spliced JSON text (service.dumps_response) is exactly what json.dumps makes of it;
    # two list results in one response, and a result reference into one of them
    calls = [["Email/get", {"accountId": jmap.account, "ids": want, "properties": LIST_PROPS},
              "0"],
             ["Core/echo", {"marker": "\u0000 0", "list": []}, "1"],
             ["Email/get", {"accountId": jmap.account, "ids": ids[:2],
                            "properties": ["subject", "keywords", "mailboxIds"]}, "2"],
             ["Thread/get", {"accountId": jmap.account, "#ids": {
                 "resultOf": "0", "name": "Email/get", "path": "/list/*/threadId"}}, "3"]]
    [(_, g0, _), (_, echo, _), (_, g2, _), (_, threads, _)] = await _raw(jmap, calls)
    assert g0["list"] == fast["list"] and echo["marker"] == "\u0000 0"
    assert [e["subject"] for e in g2["list"]] == [fast["list"][0]["subject"], None]
    assert sorted(t["id"] for t in threads["list"]) == sorted({e["threadId"]
                                                               for e in fast["list"]})
    # a subset of the list properties, in the order asked, "id" always included
    part = await jmap.ok("Email/get", {"ids": ids[:1], "properties": ["subject", "keywords"]})
    assert list(part["list"][0]) == ["id", "subject", "keywords"]
    twice = await _raw(jmap, [["Email/get", {"accountId": jmap.account, "ids": ids[:1],
                                             "properties": ["subject", "subject"]}, "0"]])
    assert twice[0][1]["list"] == [{"id": ids[0], "subject": part["list"][0]["subject"]}]


async def test_list_get_reads_keywords_and_mailboxes_fresh(jmap_any):
    jmap = jmap_any
    await jmap.deliver(message("Fresh", "x"))
    [eid] = await _all_ids(jmap)
    inbox, archive = await jmap.mailbox("inbox"), await jmap.mailbox("archive")
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": LIST_PROPS})
    assert got["list"][0]["keywords"] == {} and got["list"][0]["mailboxIds"] == {inbox: True}
    state = got["state"]
    for kind in ("Email", "Mailbox", "Thread"):  # nothing changed since the current state
        ch = await jmap.ok(f"{kind}/changes", {"sinceState": state})
        assert (ch["oldState"], ch["newState"], ch["hasMoreChanges"]) == (state, state, False)
        assert ch["created"] == ch["updated"] == ch["destroyed"] == []
    r = await jmap.ok("Email/set", {"update": {eid: {"keywords/$seen": True,
                                                     f"mailboxIds/{archive}": True}}})
    assert eid in r["updated"]
    ch = await jmap.ok("Email/changes", {"sinceState": state})
    assert ch["updated"] == [eid] and ch["newState"] == r["newState"]
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": ["keywords", "mailboxIds"]})
    assert got["list"][0]["keywords"] == {"$seen": True}
    assert got["list"][0]["mailboxIds"] == {inbox: True, archive: True}
    assert got["state"] != state
    r = await jmap.ok("Email/set", {"destroy": [eid]})
    assert r["destroyed"] == [eid]
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": LIST_PROPS})
    assert got["list"] == [] and got["notFound"] == [eid]


async def test_mailbox_page_equals_general_query(jmap_any):
    jmap = jmap_any
    # receivedAt ties (two per second) so that the id tie-break is exercised
    for k in range(12):
        await jmap.deliver(message(f"Page {k}", f"body {k}"), received_at=1_800_000_000 + k // 2)
    inbox = await jmap.mailbox("inbox")
    archive = await jmap.mailbox("archive")
    for asc in (False, True):
        for position, limit in ((0, 5), (3, 4), (10, 5), (20, 5), (0, 0), (0, 2000)):
            args = {"filter": {"inMailbox": inbox},
                    "sort": [{"property": "receivedAt", "isAscending": asc}],
                    "position": position, "limit": limit}
            fast = await jmap.ok("Email/query", args)
            slow = await jmap.ok("Email/query", {**args, "calculateTotal": True})
            assert slow["total"] == 12
            assert fast["ids"] == slow["ids"], (asc, position, limit)
            assert fast["position"] == slow["position"] == position
            assert fast["queryState"] == slow["queryState"]
            assert fast.get("limit") == slow.get("limit")
            assert fast["collapseThreads"] is False
            # no filter: the whole account
            everything = {k: v for k, v in args.items() if k != "filter"}
            assert ((await jmap.ok("Email/query", everything))["ids"]
                    == (await jmap.ok("Email/query", {**everything,
                                                      "calculateTotal": True}))["ids"])
    newest_args = {"filter": {"inMailbox": inbox}, "limit": 2,
                   "sort": [{"property": "receivedAt", "isAscending": False}]}
    newest = await jmap.ok("Email/query", newest_args)
    assert len(newest["ids"]) == 2
    assert (await jmap.ok("Email/query", newest_args)) == newest  # unchanged state: same answer
    # a delivery changes the state: the page (cached per account state) follows at once
    await jmap.deliver(message("Newest", "n"), received_at=1_900_000_000)
    after = await jmap.ok("Email/query", newest_args)
    assert after["queryState"] != newest["queryState"]
    assert after["ids"][1] == newest["ids"][0] and after["ids"][0] not in newest["ids"]
    got = await jmap.ok("Email/get", {"ids": after["ids"], "properties": ["subject"]})
    assert got["list"][0]["subject"] == "Newest"
    empty = await jmap.ok("Email/query", {"filter": {"inMailbox": archive}, "limit": 5, "sort": [
        {"property": "receivedAt", "isAscending": False}]})
    assert empty["ids"] == []
    nowhere = await jmap.ok("Email/query", {"filter": {"inMailbox": "m999999"}, "limit": 5,
                                            "sort": [{"property": "receivedAt"}]})
    assert nowhere["ids"] == []
    rname, err = await jmap.call("Email/query", {
        "filter": {"inMailbox": inbox}, "limit": 5, "anchorOffset": "x",
        "sort": [{"property": "receivedAt"}]})
    assert rname == "error" and err["type"] == "invalidArguments"


async def test_list_requests_over_websocket_and_concurrently(jmap):
    """The bench's request shape (query + back-referenced get) over WebSocket, 8 at once."""
    import asyncio
    import json

    for k in range(30):
        await jmap.deliver(message(f"WS {k}", f"body {k}"), received_at=1_800_000_000 + k)
    inbox = await jmap.mailbox("inbox")
    session = await jmap.session()
    url = session["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
    calls = [
        ["Email/query", {"accountId": jmap.account, "filter": {"inMailbox": inbox},
                         "sort": [{"property": "receivedAt", "isAscending": False}],
                         "limit": 10}, "0"],
        ["Email/get", {"accountId": jmap.account, "#ids": {
            "resultOf": "0", "name": "Email/query", "path": "/ids"},
            "properties": ["id", "subject", "keywords", "mailboxIds"]}, "1"]]

    async def one(n: int) -> list[str]:
        async with jmap.http.ws_connect(url, protocols=("jmap",),
                                        headers={"Authorization": jmap.auth}) as ws:
            await ws.send_str(json.dumps({"@type": "Request", "id": str(n),
                                          "using": ["urn:ietf:params:jmap:core",
                                                    "urn:ietf:params:jmap:mail"],
                                          "methodCalls": calls}))
            reply = json.loads(await ws.receive_str())
            assert reply["requestId"] == str(n)
            q, g = reply["methodResponses"]
            assert [x["id"] for x in g[1]["list"]] == q[1]["ids"]
            return [x["subject"] for x in g[1]["list"]]

    # 8 at once: the per-account maxConcurrentRequests (RFC 8620 §2) is 8
    results = await asyncio.gather(*(one(n) for n in range(8)))
    assert all(r == [f"WS {k}" for k in range(29, 19, -1)] for r in results)


def test_state_cache_keeps_the_newest_state_and_stays_bounded():
    from mailserver.servers.jmap.emailview import StateCache

    c = StateCache(max_entries=3)
    c.put(1, 5, "a", "A5")
    assert c.at(1, 5) == {"a": "A5"} and c.at(1, 4) == {} and c.at(1, 6) == {}
    c.put(1, 4, "a", "A4")  # read in an older snapshot: never replaces the newer state
    assert c.at(1, 5) == {"a": "A5"} and c.at(1, 4) == {}
    c.put(1, 6, "b", "B6")  # a newer state: what was known before is gone
    assert c.at(1, 5) == {} and c.at(1, 6) == {"b": "B6"}
    c.put(1, 6, "b", "B6")  # the same key again is not a new entry
    c.put(2, 1, "x", "X")
    c.put(2, 1, "y", "Y")
    assert c.at(2, 1) == {"x": "X", "y": "Y"}
    c.put(3, 1, "z", "Z")  # past max_entries: dropped, then this one recorded
    assert c.at(1, 6) == {} and c.at(2, 1) == {} and c.at(3, 1) == {"z": "Z"}
