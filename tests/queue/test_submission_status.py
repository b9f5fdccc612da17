"""JMAP EmailSubmission deliveryStatus end to end: a submission to remote recipients goes
through the real queue worker to an SMTP sink (MX from the knot zone) and its deliveryStatus
turns from "queued" to "yes" / "no" with the remote reply (RFC 8621 §7)."""

from __future__ import annotations

import base64

import aiohttp
from qhelpers import FakeClock

from mailserver.testing.daemons import PASSWORD

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
         "urn:ietf:params:jmap:submission"]


async def test_delivery_status_after_the_worker(qenv):
    await qenv.env.start("jmap")
    host, port = qenv.env.address("jmap")
    auth = "Basic " + base64.b64encode(f"alice@example.test:{PASSWORD}".encode()).decode()
    sink = await qenv.sink("127.0.0.4", rcpt_reply=lambda a: "550 5.1.1 no such user"
                           if a.startswith("gone") else "250 2.1.5 ok")
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
        async def api(calls):
            async with http.post(f"http://{host}:{port}/jmap/api/",
                                 json={"using": USING, "methodCalls": calls}) as r:
                assert r.status == 200
                return (await r.json())["methodResponses"]

        async with http.get(f"http://{host}:{port}/.well-known/jmap") as r:
            account = next(iter((await r.json())["primaryAccounts"].values()))
        [[_n, mailboxes, _c], [_n2, identities, _c2]] = await api([
            ["Mailbox/get", {"accountId": account}, "0"],
            ["Identity/get", {"accountId": account}, "1"]])
        drafts = next(m["id"] for m in mailboxes["list"] if m["role"] == "drafts")
        identity = identities["list"][0]["id"]
        rcpts = ["here@ok.remote.test", "gone@ok.remote.test"]
        responses = await api([
            ["Email/set", {"accountId": account, "create": {"d": {
                "mailboxIds": {drafts: True}, "from": [{"email": "alice@example.test"}],
                "to": [{"email": a} for a in rcpts], "subject": "status",
                "bodyValues": {"b": {"value": "hi"}}, "textBody": [{"partId": "b"}]}}}, "0"],
            ["EmailSubmission/set", {"accountId": account, "create": {
                "s": {"identityId": identity, "emailId": "#d"}}}, "1"]])
        sid = responses[1][1]["created"]["s"]["id"]

        async def status():
            [[_n, got, _c]] = await api([["EmailSubmission/get", {
                "accountId": account, "ids": [sid], "properties": ["deliveryStatus"]}, "0"]])
            return got["list"][0]["deliveryStatus"]

        assert {v["delivered"] for v in (await status()).values()} == {"queued"}
        [[_n, before, _c]] = await api([["EmailSubmission/get", {
            "accountId": account, "ids": []}, "0"]])
        clock = FakeClock()
        await qenv.worker(clock).run_until_idle()
        st = await status()
        # the final outcomes changed the object: its state moved and /changes says so
        [[_n, ch, _c]] = await api([["EmailSubmission/changes", {
            "accountId": account, "sinceState": before["state"]}, "0"]])
        assert ch["updated"] == [sid] and ch["newState"] != before["state"]
    assert sink.recipients() == ["here@ok.remote.test"]
    assert st["here@ok.remote.test"]["delivered"] == "yes"
    assert st["here@ok.remote.test"]["smtpReply"].startswith("250")
    assert st["gone@ok.remote.test"]["delivered"] == "no"
    assert st["gone@ok.remote.test"]["smtpReply"].startswith("550 5.1.1")
