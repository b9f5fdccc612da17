"""Push and WebSocket: EventSource (RFC 8620 §7.3) and JMAP over WebSocket (RFC 8887)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from jmap_testlib import CORE, MAIL, USING, message

TIMEOUT = 30  # generous: the machine is shared; the push itself takes milliseconds


async def read_events(resp: aiohttp.ClientResponse, n: int) -> list[tuple[str, dict]]:
    """The next ``n`` server-sent events as (event type, data)."""
    events, kind, data = [], None, []
    while len(events) < n:
        line = (await asyncio.wait_for(resp.content.readline(), TIMEOUT)).decode()
        if line == "":
            break
        line = line.rstrip("\n")
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and kind:
            events.append((kind, json.loads("\n".join(data))))
            kind, data = None, []
    return events


async def test_eventsource_push_on_delivery(jmap):
    url = f"{jmap.base}/jmap/eventsource/?types=*&closeafter=no&ping=0"
    async with jmap.http.get(url, headers={"Authorization": jmap.auth,
                                           "Accept": "text/event-stream"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await jmap.deliver(message("Pushed"))  # delivered the SMTP way: the ingest path
        [(kind, change)] = await read_events(resp, 1)
    assert kind == "state" and change["@type"] == "StateChange"
    changed = change["changed"][jmap.account]
    assert {"Email", "Mailbox", "Thread", "EmailDelivery"} <= set(changed)
    # the pushed state is the state Email/get now reports
    got = await jmap.ok("Email/get", {"ids": []})
    assert changed["Email"] == got["state"]


async def test_eventsource_types_closeafter_and_ping(jmap):
    url = f"{jmap.base}/jmap/eventsource/?types=Mailbox&closeafter=state&ping=1"
    async with jmap.http.get(url, headers={"Authorization": jmap.auth}) as resp:
        [(kind, ping)] = await read_events(resp, 1)
        assert kind == "ping" and ping == {"interval": 1}
        # a keyword change touches Email only: filtered out by types=Mailbox … except that
        # the unread count of the mailbox changes too, so deliver then flag
        await jmap.ok("Mailbox/set", {"create": {"x": {"name": "New"}}})
        events = [e for e in await read_events(resp, 3) if e[0] == "state"]
        assert events and set(events[0][1]["changed"][jmap.account]) == {"Mailbox"}
        # closeafter=state: the server ends the response after the state event
        rest = await asyncio.wait_for(resp.content.read(), TIMEOUT)
        assert b"event: state" not in rest


async def test_eventsource_bad_arguments(jmap):
    for q in ("closeafter=sometimes", "ping=abc", "ping=-1"):
        async with jmap.http.get(f"{jmap.base}/jmap/eventsource/?{q}",
                                 headers={"Authorization": jmap.auth}) as r:
            assert r.status == 400


async def ws_connect(jmap) -> aiohttp.ClientWebSocketResponse:
    s = await jmap.session()
    url = s["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
    return await jmap.http.ws_connect(url, protocols=("jmap",),
                                      headers={"Authorization": jmap.auth})


async def ws_recv(ws: aiohttp.ClientWebSocketResponse) -> dict:
    return json.loads(await asyncio.wait_for(ws.receive_str(), TIMEOUT))


async def test_websocket_requests_and_errors(jmap):
    ws = await ws_connect(jmap)
    try:
        assert ws.protocol == "jmap"
        await ws.send_str(json.dumps({"@type": "Request", "id": "r1", "using": USING,
                                      "methodCalls": [["Core/echo", {"x": 1}, "0"],
                                                      ["Mailbox/get", {"accountId": jmap.account,
                                                                       "ids": []}, "1"]]}))
        resp = await ws_recv(ws)
        assert resp["@type"] == "Response" and resp["requestId"] == "r1"
        assert resp["methodResponses"][0] == ["Core/echo", {"x": 1}, "0"]
        assert resp["methodResponses"][1][0] == "Mailbox/get"
        await ws.send_str("{nope")
        err = await ws_recv(ws)
        assert err["@type"] == "RequestError"
        assert err["type"] == "urn:ietf:params:jmap:error:notJSON"
        await ws.send_str(json.dumps({"@type": "Request", "id": "r2", "using": ["urn:x"],
                                      "methodCalls": []}))
        err = await ws_recv(ws)
        assert err["type"] == "urn:ietf:params:jmap:error:unknownCapability"
        assert err["requestId"] == "r2"
        await ws.send_str(json.dumps({"@type": "Nonsense"}))
        assert (await ws_recv(ws))["type"] == "urn:ietf:params:jmap:error:notRequest"
        # still usable after errors
        await ws.send_str(json.dumps({"@type": "Request", "id": "r3", "using": [CORE],
                                      "methodCalls": [["Core/echo", {}, "0"]]}))
        assert (await ws_recv(ws))["requestId"] == "r3"
    finally:
        await ws.close()


async def test_websocket_push_enable_disable(jmap):
    ws = await ws_connect(jmap)
    try:
        await ws.send_str(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]}))
        await jmap.deliver(message("Over the socket"))
        change = await ws_recv(ws)
        assert change["@type"] == "StateChange"
        assert set(change["changed"][jmap.account]) == {"Email"}
        assert change["pushState"] == change["changed"][jmap.account]["Email"]
        await ws.send_str(json.dumps({"@type": "WebSocketPushDisable"}))
        # after disabling, a change produces nothing; a request still gets its answer first
        await ws.send_str(json.dumps({"@type": "Request", "id": "after", "using": [CORE],
                                      "methodCalls": [["Core/echo", {}, "0"]]}))
        assert (await ws_recv(ws))["requestId"] == "after"
        await jmap.deliver(message("Not pushed", msgid="np@x"))
        await ws.send_str(json.dumps({"@type": "Request", "id": "last", "using": [CORE],
                                      "methodCalls": [["Core/echo", {}, "0"]]}))
        assert (await ws_recv(ws))["requestId"] == "last"
        # pushState: changes since an old state are announced at once
        await ws.send_str(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None,
                                      "pushState": "1"}))
        change = await ws_recv(ws)
        assert change["@type"] == "StateChange" and "Email" in change["changed"][jmap.account]
    finally:
        await ws.close()


async def test_websocket_needs_subprotocol(jmap):
    s = await jmap.session()
    url = s["capabilities"]["urn:ietf:params:jmap:websocket"]["url"]
    try:
        ws = await jmap.http.ws_connect(url, headers={"Authorization": jmap.auth})
    except aiohttp.WSServerHandshakeError as e:
        assert e.status == 400
    else:  # pragma: no cover - the handshake must fail
        await ws.close()
        raise AssertionError("handshake without the jmap subprotocol succeeded")


async def test_imap_style_flag_change_pushes_keyword_state(jmap):
    """A flag changed through the store service IMAP uses shows as a JMAP keyword change."""
    from mailserver.store.mailstore import MailStore

    await jmap.deliver(message("Flag me"))
    [eid] = (await jmap.ok("Email/query", {}))["ids"]
    state = (await jmap.ok("Email/get", {"ids": []}))["state"]
    app = jmap.env.app
    store = MailStore(app.db, app.blobs, app.bus)
    account_id = jmap.env.account_ids["alice"]
    url = f"{jmap.base}/jmap/eventsource/?types=Email&closeafter=state&ping=0"
    async with jmap.http.get(url, headers={"Authorization": jmap.auth}) as resp:
        inbox = await store.get_mailbox_by_path(account_id, "INBOX")
        [(uid, _e, _m)] = await store.uid_map(account_id, inbox.id)
        await store.set_keywords(account_id, mailbox_id=inbox.id, uids=[uid],
                                 add=["\\Flagged"])  # IMAP STORE +FLAGS (\Flagged)
        [(kind, change)] = await read_events(resp, 1)
    assert kind == "state" and "Email" in change["changed"][jmap.account]
    ch = await jmap.ok("Email/changes", {"sinceState": state})
    assert ch["updated"] == [eid]
    got = await jmap.ok("Email/get", {"ids": [eid], "properties": ["keywords"]})
    assert got["list"][0]["keywords"] == {"$flagged": True}
    assert MAIL


@contextlib.asynccontextmanager
async def push_receiver(handler):
    """A push service on loopback: POST /push goes to ``handler``; yields the URL."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/push", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/push"
    finally:
        await runner.cleanup()


async def test_push_subscription_verification_and_delivery(jmap):
    """RFC 8620 §7.2: PushVerification to the URL, verificationCode update, then StateChange."""
    from aiohttp import web

    received: asyncio.Queue = asyncio.Queue()

    async def receiver(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.Response(status=201)

    async with push_receiver(receiver) as url:
        r = await jmap.request([["PushSubscription/set", {"create": {"s": {
            "deviceClientId": "phone-1", "url": url, "types": ["Email"]}}}, "0"]], [CORE])
        created = r[0][1]["created"]["s"]
        verification = await asyncio.wait_for(received.get(), TIMEOUT)
        assert verification["@type"] == "PushVerification"
        assert verification["pushSubscriptionId"] == created["id"]
        # wrong code, then the right one
        r = await jmap.request([["PushSubscription/set", {"update": {
            created["id"]: {"verificationCode": "wrong"}}}, "0"]], [CORE])
        assert r[0][1]["notUpdated"][created["id"]]["type"] == "invalidProperties"
        r = await jmap.request([["PushSubscription/set", {"update": {
            created["id"]: {"verificationCode": verification["verificationCode"]}}}, "0"]],
            [CORE])
        assert r[0][1]["updated"] == {created["id"]: None}
        got = await jmap.request([["PushSubscription/get", {}, "0"]], [CORE])
        [sub] = got[0][1]["list"]
        assert sub["deviceClientId"] == "phone-1" and "url" not in sub
        assert sub["verificationCode"] == verification["verificationCode"]
        await jmap.deliver(message("Pushed to a URL"))
        change = await asyncio.wait_for(received.get(), TIMEOUT)
        assert change["@type"] == "StateChange"
        assert set(change["changed"][jmap.account]) == {"Email"}
        r = await jmap.request([["PushSubscription/set", {"destroy": [created["id"]]}, "0"]],
                               [CORE])
        assert r[0][1]["destroyed"] == [created["id"]]
        # refused: not https, keys, accountId
        r = await jmap.request([["PushSubscription/set", {"create": {
            "a": {"deviceClientId": "x", "url": "http://example.com/push"},
            "b": {"deviceClientId": "x", "url": url, "keys": {"p256dh": "x", "auth": "y"}}}},
            "0"], ["PushSubscription/get", {"accountId": jmap.account}, "1"]], [CORE])
        assert r[0][1]["notCreated"]["a"]["properties"] == ["url"]
        assert r[0][1]["notCreated"]["b"]["properties"] == ["keys"]
        assert r[1][1]["type"] == "invalidArguments"


async def test_stop_ends_push_streams(jmap):
    """Stopping the daemon closes open EventSource streams and WebSockets (no hang)."""
    url = f"{jmap.base}/jmap/eventsource/?types=*&closeafter=no&ping=0"
    async with jmap.http.get(url, headers={"Authorization": jmap.auth}) as resp:
        ws = await ws_connect(jmap)
        await ws.send_str(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": None}))
        daemon = jmap.env.running.pop("jmap")
        await asyncio.wait_for(daemon.stop(), TIMEOUT)
        rest = await asyncio.wait_for(resp.content.read(), TIMEOUT)
        assert b"event: state" not in rest
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING)
        await ws.close()


async def test_push_subscription_with_keys_is_encrypted(jmap):
    """RFC 8620 §7.2 keys → RFC 8291 aes128gcm bodies, decrypted here by the independent
    ``http_ece`` library with the client's private key."""
    import base64

    import http_ece
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ua_key = ec.generate_private_key(ec.SECP256R1())
    ua_public = ua_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    auth = bytes(range(16))

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    received: asyncio.Queue = asyncio.Queue()

    async def receiver(request: web.Request) -> web.Response:
        await received.put((request.headers.get("Content-Encoding"), await request.read()))
        return web.Response(status=201)

    def opened(item) -> dict:
        encoding, body = item
        assert encoding == "aes128gcm" and not body.startswith(b"{")
        return json.loads(http_ece.decrypt(body, private_key=ua_key, auth_secret=auth,
                                           version="aes128gcm"))

    async with push_receiver(receiver) as url:
        keys = {"p256dh": b64(ua_public), "auth": b64(auth)}
        r = await jmap.request([["PushSubscription/set", {"create": {"s": {
            "deviceClientId": "phone-2", "url": url, "keys": keys}}}, "0"]], [CORE])
        sid = r[0][1]["created"]["s"]["id"]
        verification = opened(await asyncio.wait_for(received.get(), TIMEOUT))
        assert verification["@type"] == "PushVerification"
        assert verification["pushSubscriptionId"] == sid
        await jmap.request([["PushSubscription/set", {"update": {
            sid: {"verificationCode": verification["verificationCode"]}}}, "0"]], [CORE])
        got = await jmap.request([["PushSubscription/get", {}, "0"]], [CORE])
        assert "keys" not in got[0][1]["list"][0]  # write-only
        await jmap.deliver(message("Pushed, encrypted"))
        change = opened(await asyncio.wait_for(received.get(), TIMEOUT))
        assert change["@type"] == "StateChange" and jmap.account in change["changed"]
        # keys that are not a P-256 point and a 16-byte secret are refused
        for bad in ({"p256dh": "x", "auth": "y"},
                    {"p256dh": b64(ua_public), "auth": b64(b"short")},
                    {"p256dh": b64(b"\x04" + bytes(64)), "auth": b64(auth)},
                    {"p256dh": b64(ua_public)}):
            r = await jmap.request([["PushSubscription/set", {"create": {"b": {
                "deviceClientId": "x", "url": url, "keys": bad}}}, "0"]], [CORE])
            assert r[0][1]["notCreated"]["b"]["properties"] == ["keys"], bad
