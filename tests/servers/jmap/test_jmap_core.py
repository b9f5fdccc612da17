"""RFC 8620 core over real HTTP: session, auth, method calls, references, errors, limits, blobs."""

from __future__ import annotations

import asyncio
import json

import pytest

from jmap_testlib import CORE, MAIL, USING, basic, message

ERR = "urn:ietf:params:jmap:error:"


async def test_session_requires_authentication(jmap):
    async with jmap.http.get(jmap.base + "/.well-known/jmap") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    async with jmap.http.get(jmap.base + "/.well-known/jmap",
                             headers={"Authorization": basic("alice", "wrong")}) as r:
        assert r.status == 401
    async with jmap.http.get(jmap.base + "/.well-known/jmap",
                             headers={"Authorization": "Basic !!notbase64"}) as r:
        assert r.status == 401
    status, body = await jmap.post({"using": USING, "methodCalls": []},
                                   auth=basic("alice", "nope"))
    assert status == 401


async def test_session_resource(jmap):
    s = await jmap.session()
    assert s["username"] == "alice@example.test"
    assert s["primaryAccounts"][MAIL] == jmap.account
    acc = s["accounts"][jmap.account]
    assert acc["isPersonal"] is True and MAIL in acc["accountCapabilities"]
    core = s["capabilities"][CORE]
    for key in ("maxSizeUpload", "maxConcurrentUpload", "maxSizeRequest",
                "maxConcurrentRequests", "maxCallsInRequest", "maxObjectsInGet",
                "maxObjectsInSet", "collationAlgorithms"):
        assert key in core
    assert s["apiUrl"].startswith(jmap.base)
    assert "{accountId}" in s["uploadUrl"] and "{blobId}" in s["downloadUrl"]
    assert "{closeafter}" in s["eventSourceUrl"]
    assert s["capabilities"]["urn:ietf:params:jmap:websocket"]["url"].startswith("ws://")
    assert isinstance(s["state"], str) and s["state"]


async def test_bearer_token(jmap):
    token = await jmap.env.app.directory.create_token("alice@example.test", "test")
    status, body = await jmap.post({"using": [CORE], "methodCalls": [["Core/echo", {"a": 1},
                                                                      "e"]]},
                                   auth=f"Bearer {token}")
    assert status == 200
    assert body["methodResponses"] == [["Core/echo", {"a": 1}, "e"]]
    status, _ = await jmap.post({"using": [CORE], "methodCalls": []},
                                auth=f"Bearer {token[:-2]}xx")
    assert status == 401


async def test_rfc8620_echo_example(jmap):
    # RFC 8620 §4.1 example
    args = {"hello": True, "high": 5}
    responses = await jmap.request([["Core/echo", args, "b3ff"]], [CORE])
    assert responses == [["Core/echo", args, "b3ff"]]


async def test_not_json_and_not_request(jmap):
    for raw in (b"{not json", b'{"using": [], "using": []}', b"\xff\xfe", b"NaN",
                b'{"a": NaN}'):
        status, body = await jmap.post(None, raw=raw)
        assert status == 400, raw
        assert body["type"] == ERR + "notJSON", raw
    for obj in ([], {"using": "x", "methodCalls": []}, {"using": [CORE]},
                {"using": [CORE], "methodCalls": [["Core/echo", {}]]},
                {"using": [CORE], "methodCalls": [["Core/echo", [], "x"]]},
                {"using": [CORE], "methodCalls": [], "createdIds": []}):
        status, body = await jmap.post(obj)
        assert status == 400, obj
        assert body["type"] == ERR + "notRequest", obj
        assert body["status"] == 400


async def test_unknown_capability(jmap):
    status, body = await jmap.post({"using": [CORE, "urn:example:nope"],
                                    "methodCalls": [["Core/echo", {}, "0"]]})
    assert status == 400
    assert body["type"] == ERR + "unknownCapability"


async def test_unknown_method_and_capability_not_used(jmap):
    responses = await jmap.request([["Foo/bar", {}, "0"],
                                    ["Mailbox/get", {"accountId": jmap.account}, "1"],
                                    ["Core/echo", {"still": "running"}, "2"]], [CORE])
    assert responses[0] == ["error", {"type": "unknownMethod",
                                      "description": "unknown method 'Foo/bar'"}, "0"]
    assert responses[1][0] == "error" and responses[1][1]["type"] == "unknownMethod"
    assert responses[2] == ["Core/echo", {"still": "running"}, "2"]


async def test_limit_max_calls_in_request(jmap):
    s = await jmap.session()
    n = s["capabilities"][CORE]["maxCallsInRequest"]
    status, body = await jmap.post({"using": [CORE], "methodCalls": [
        ["Core/echo", {}, str(i)] for i in range(n + 1)]})
    assert status == 400
    assert body["type"] == ERR + "limit" and body["limit"] == "maxCallsInRequest"
    status, _ = await jmap.post({"using": [CORE], "methodCalls": [
        ["Core/echo", {}, str(i)] for i in range(n)]})
    assert status == 200


async def test_limit_max_size_request(jmap):
    s = await jmap.session()
    size = s["capabilities"][CORE]["maxSizeRequest"]
    big = json.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"x": "a" * size}, "0"]]})
    status, body = await jmap.post(None, raw=big.encode())
    assert status == 400
    assert body["type"] == ERR + "limit" and body["limit"] == "maxSizeRequest"
    # the daemon is still fine afterwards
    assert (await jmap.request([["Core/echo", {}, "0"]], [CORE]))[0][0] == "Core/echo"


async def test_wrong_argument_types_and_account(jmap):
    bad = [
        ["Mailbox/get", {"accountId": 5}, "0"],
        ["Mailbox/get", {"accountId": jmap.account, "ids": "m1"}, "1"],
        ["Email/query", {"accountId": jmap.account, "limit": -1}, "2"],
        ["Email/query", {"accountId": jmap.account, "position": "0"}, "3"],
        ["Email/get", {"accountId": jmap.account, "ids": ["e1"], "properties": ["nope"]}, "4"],
        ["Email/query", {"accountId": jmap.account, "collapseThreads": 1}, "5"],
        ["Email/get", {"accountId": jmap.account, "ids": ["e1"],
                       "properties": ["header:From:asWhatever"]}, "6"],
    ]
    responses = await jmap.request(bad)
    for r in responses:
        assert r[0] == "error" and r[1]["type"] == "invalidArguments", r
    [r] = await jmap.request([["Mailbox/get", {"accountId": "a999"}, "0"]])
    assert r[1]["type"] == "accountNotFound"


async def test_too_many_objects(jmap):
    s = await jmap.session()
    core = s["capabilities"][CORE]
    ids = [f"e{i}" for i in range(core["maxObjectsInGet"] + 1)]
    [r] = await jmap.request([["Email/get", {"accountId": jmap.account, "ids": ids}, "0"]])
    assert r == ["error", {"type": "requestTooLarge",
                           "description": f"more than {core['maxObjectsInGet']} ids"}, "0"]
    destroy = [f"e{i}" for i in range(core["maxObjectsInSet"] + 1)]
    [r] = await jmap.request([["Email/set", {"accountId": jmap.account,
                                             "destroy": destroy}, "0"]])
    assert r[0] == "error" and r[1]["type"] == "requestTooLarge"


async def test_result_references_rfc8620_example(jmap):
    """RFC 8620 §3.7: Email/query → Email/get(threadId) → Thread/get → Email/get."""
    await jmap.deliver(message("First", msgid="t1@x"))
    await jmap.deliver(message("Re: First", msgid="t2@x", extra="In-Reply-To: <t1@x>\r\n"))
    inbox = await jmap.mailbox("inbox")
    a = jmap.account
    responses = await jmap.request([
        ["Email/query", {"accountId": a, "filter": {"inMailbox": inbox},
                         "sort": [{"property": "receivedAt", "isAscending": False}],
                         "collapseThreads": True, "position": 0, "limit": 10,
                         "calculateTotal": True}, "t0"],
        ["Email/get", {"accountId": a, "#ids": {"resultOf": "t0", "name": "Email/query",
                                                "path": "/ids"},
                       "properties": ["threadId"]}, "t1"],
        ["Thread/get", {"accountId": a, "#ids": {"resultOf": "t1", "name": "Email/get",
                                                 "path": "/list/*/threadId"}}, "t2"],
        ["Email/get", {"accountId": a, "#ids": {"resultOf": "t2", "name": "Thread/get",
                                                "path": "/list/*/emailIds"},
                       "properties": ["from", "receivedAt", "subject"]}, "t3"],
    ])
    assert [r[0] for r in responses] == ["Email/query", "Email/get", "Thread/get", "Email/get"]
    assert responses[0][1]["total"] == 1  # one thread
    [thread] = responses[2][1]["list"]
    assert len(thread["emailIds"]) == 2
    assert sorted(e["subject"] for e in responses[3][1]["list"]) == ["First", "Re: First"]


async def test_invalid_result_references(jmap):
    a = jmap.account
    cases = [
        {"resultOf": "nope", "name": "Email/query", "path": "/ids"},
        {"resultOf": "q", "name": "Mailbox/get", "path": "/ids"},
        {"resultOf": "q", "name": "Email/query", "path": "/nothere"},
        {"resultOf": "q", "name": "Email/query"},
        "notanobject",
    ]
    for ref in cases:
        responses = await jmap.request([
            ["Email/query", {"accountId": a}, "q"],
            ["Email/get", {"accountId": a, "#ids": ref}, "g"]])
        assert responses[1][0] == "error"
        assert responses[1][1]["type"] == "invalidResultReference", ref
    # reference to an error response
    responses = await jmap.request([
        ["Email/query", {"accountId": "bad"}, "q"],
        ["Email/get", {"accountId": a, "#ids": {"resultOf": "q", "name": "Email/query",
                                                "path": "/ids"}}, "g"]])
    assert responses[1][1]["type"] == "invalidResultReference"
    # both ids and #ids
    responses = await jmap.request([
        ["Email/query", {"accountId": a}, "q"],
        ["Email/get", {"accountId": a, "ids": [], "#ids": {
            "resultOf": "q", "name": "Email/query", "path": "/ids"}}, "g"]])
    assert responses[1][1]["type"] == "invalidArguments"


async def test_creation_id_back_references(jmap):
    a = jmap.account
    responses = await jmap.request([
        ["Mailbox/set", {"accountId": a, "create": {"k1": {"name": "Projects"}}}, "0"],
        ["Mailbox/set", {"accountId": a, "create": {"k2": {"name": "2026",
                                                           "parentId": "#k1"}}}, "1"],
        ["Email/set", {"accountId": a, "create": {"d1": {
            "mailboxIds": {"#k2": True}, "subject": "draft", "keywords": {"$draft": True},
            "bodyValues": {"b": {"value": "hi"}}, "textBody": [{"partId": "b"}]}}}, "2"],
        ["Email/get", {"accountId": a, "ids": ["#d1"], "properties": ["mailboxIds",
                                                                     "subject"]}, "3"],
    ])
    k1 = responses[0][1]["created"]["k1"]["id"]
    k2 = responses[1][1]["created"]["k2"]["id"]
    [email] = responses[3][1]["list"]
    assert email["mailboxIds"] == {k2: True} and email["subject"] == "draft"
    got = await jmap.ok("Mailbox/get", {"ids": [k2]})
    assert got["list"][0]["parentId"] == k1
    # createdIds in and out (RFC 8620 §3.3)
    status, body = await jmap.post({"using": USING, "createdIds": {"x": k1}, "methodCalls": [
        ["Mailbox/get", {"accountId": a, "ids": ["#x"], "properties": ["name"]}, "0"],
        ["Mailbox/set", {"accountId": a, "create": {"y": {"name": "Y"}}}, "1"]]})
    assert body["methodResponses"][0][1]["list"] == [{"id": k1, "name": "Projects"}]
    assert set(body["createdIds"]) == {"x", "y"}


async def test_upload_download(jmap):
    data = b"\x00binary\xffdata" * 100
    url = f"{jmap.base}/jmap/upload/{jmap.account}/"
    async with jmap.http.post(url, data=data, headers={
            "Authorization": jmap.auth, "Content-Type": "application/x-test"}) as r:
        assert r.status == 201
        up = await r.json()
    assert up["size"] == len(data) and up["type"] == "application/x-test"
    assert up["accountId"] == jmap.account
    dl = f"{jmap.base}/jmap/download/{jmap.account}/{up['blobId']}/f%C3%BCr.bin?accept=image/png"
    async with jmap.http.get(dl, headers={"Authorization": jmap.auth}) as r:
        assert r.status == 200
        assert await r.read() == data
        assert r.headers["Content-Type"] == "image/png"
        assert "f%C3%BCr.bin" in r.headers["Content-Disposition"]
    # bob cannot use alice's upload, even with his own account in the URL
    bob = basic("bob")
    s = await jmap.session()
    async with jmap.http.get(jmap.base + "/.well-known/jmap", headers={"Authorization": bob}) as r:
        bob_account = next(iter((await r.json())["accounts"]))
    async with jmap.http.get(dl.replace(jmap.account, bob_account),
                             headers={"Authorization": bob}) as r:
        assert r.status == 404
    async with jmap.http.get(dl, headers={"Authorization": bob}) as r:
        assert r.status == 404
    async with jmap.http.get(f"{jmap.base}/jmap/download/{jmap.account}/{'0' * 64}/x",
                             headers={"Authorization": jmap.auth}) as r:
        assert r.status == 404
    assert s["capabilities"][CORE]["maxSizeUpload"] > 0


async def test_upload_too_large(jmap):
    svc_limit = 1024
    jmap.env.running["jmap"].service.limits = type(jmap.env.running["jmap"].service.limits)(
        max_size_upload=svc_limit)
    url = f"{jmap.base}/jmap/upload/{jmap.account}/"
    async with jmap.http.post(url, data=b"x" * (svc_limit + 1),
                              headers={"Authorization": jmap.auth}) as r:
        assert r.status == 413
        body = await r.json(content_type=None)
        assert body["type"] == ERR + "limit" and body["limit"] == "maxSizeUpload"


async def test_concurrent_request_limit(jmap):
    svc = jmap.env.running["jmap"].service
    account_id = jmap.env.account_ids["alice"]
    svc._requests[account_id] = svc.limits.max_concurrent_requests  # requests in flight
    try:
        status, body = await jmap.post({"using": [CORE], "methodCalls": []})
        assert status == 429
        assert body["type"] == ERR + "limit" and body["limit"] == "maxConcurrentRequests"
    finally:
        del svc._requests[account_id]
    status, body = await jmap.post({"using": [CORE], "methodCalls": []})
    assert status == 200


async def test_failed_logins_are_throttled(jmap):
    from mailserver.auth.throttle import MemoryLoginThrottle, ThrottlePolicy

    # the shared throttle, with the tarpit shortened so that the test is quick
    jmap.env.running["jmap"].service.throttle = MemoryLoginThrottle(ThrottlePolicy(
        base_delay=0.01, max_delay=0.02, lockout_after=6))
    wrong = basic("carol", "wrong password")
    statuses = []
    for _ in range(12):
        async with jmap.http.get(jmap.base + "/.well-known/jmap",
                                 headers={"Authorization": wrong}) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}


async def test_many_sessions_in_parallel(jmap):
    async def one(i: int) -> None:
        r = await jmap.request([["Core/echo", {"i": i}, "x"]], [CORE])
        assert r == [["Core/echo", {"i": i}, "x"]]
    await asyncio.gather(*(one(i) for i in range(20)))


@pytest.mark.parametrize("path", ["/jmap/api/", "/.well-known/jmap", "/jmap/ws",
                                  "/jmap/eventsource/"])
async def test_every_endpoint_requires_auth(jmap, path):
    method = jmap.http.post if path == "/jmap/api/" else jmap.http.get
    async with method(jmap.base + path) as r:
        assert r.status == 401
