"""The REST facade (/v1) over real HTTP, and schemathesis fuzzing against its OpenAPI file."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys

import pytest

from jmap_testlib import message


async def rest(jmap, method: str, path: str, **kw):
    async with jmap.http.request(method, jmap.base + path,
                                 headers={"Authorization": jmap.auth}, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_rest_folders_messages_paging_patch(jmap):
    for i in range(5):
        await jmap.deliver(message(f"Message {i}", f"body {i}", msgid=f"rest{i}@x"),
                           received_at=1_700_000_000 + i)
    status, body = await rest(jmap, "GET", "/v1/folders")
    assert status == 200
    inbox = next(f for f in body["folders"] if f["role"] == "inbox")
    assert inbox["total"] == 5 and inbox["unread"] == 5
    seen, token, pages = [], None, 0
    while True:
        q = "?limit=2" + (f"&page_token={token}" if token else "")
        status, page = await rest(jmap, "GET", f"/v1/folders/{inbox['id']}/messages{q}")
        assert status == 200, page
        seen += [m["subject"] for m in page["messages"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
        if pages == 1:  # a message arriving between pages does not shift the cursor
            await jmap.deliver(message("Late arrival", msgid="late@x"))
    assert seen == [f"Message {i}" for i in (4, 3, 2, 1, 0)] and pages == 3
    first = (await rest(jmap, "GET", f"/v1/folders/{inbox['id']}/messages?limit=1"))[1]
    mid = first["messages"][0]["id"]
    status, msg = await rest(jmap, "GET", f"/v1/messages/{mid}")
    assert status == 200 and msg["text"].strip() and msg["read"] is False
    archive = next(f for f in body["folders"] if f["role"] == "archive")
    status, msg = await rest(jmap, "PATCH", f"/v1/messages/{mid}",
                             json={"read": True, "folder_ids": [archive["id"]]})
    assert status == 200, msg
    assert msg["read"] is True and msg["folder_ids"] == [archive["id"]]
    status, unread = await rest(jmap, "GET", f"/v1/folders/{inbox['id']}/messages?filter=unread")
    assert mid not in [m["id"] for m in unread["messages"]]
    status, read = await rest(jmap, "GET", f"/v1/folders/{archive['id']}/messages?filter=read")
    assert [m["id"] for m in read["messages"]] == [mid]
    # errors
    assert (await rest(jmap, "GET", "/v1/messages/e999"))[0] == 404
    assert (await rest(jmap, "GET", "/v1/folders/m999/messages"))[0] == 404
    assert (await rest(jmap, "GET", f"/v1/folders/{inbox['id']}/messages?limit=0"))[0] == 400
    assert (await rest(jmap, "GET",
                       f"/v1/folders/{inbox['id']}/messages?page_token=%%%"))[0] == 400
    assert (await rest(jmap, "GET",
                       f"/v1/folders/{inbox['id']}/messages?page_token=c999"))[0] == 409
    assert (await rest(jmap, "PATCH", f"/v1/messages/{mid}", json={"read": "yes"}))[0] == 400
    assert (await rest(jmap, "PATCH", f"/v1/messages/{mid}", data=b"nope"))[0] == 400
    assert (await rest(jmap, "PATCH", "/v1/messages/e999", json={"read": True}))[0] == 404
    async with jmap.http.get(jmap.base + "/v1/folders") as r:
        assert r.status == 401


async def test_openapi_document(jmap):
    async with jmap.http.get(jmap.base + "/v1/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/folders", "/v1/folders/{id}/messages", "/v1/messages/{id}"} <= set(doc["paths"])


async def test_schemathesis_fuzz(jmap, tmp_path):
    """schemathesis generates requests from the OpenAPI file and checks every answer against
    it: no 5xx, responses conform to their schemas, documented status codes only."""
    st = shutil.which("schemathesis") or shutil.which("st")
    if st is None:
        venv_bin = __import__("pathlib").Path(sys.executable).parent / "schemathesis"
        st = str(venv_bin) if venv_bin.exists() else None
    if st is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("schemathesis not installed (CI=true: a missing tool is a failure)")
        pytest.skip("schemathesis not installed")
    from mailserver.auth.throttle import MemoryLoginThrottle, ThrottlePolicy

    # schemathesis tries invalid credentials on purpose and expects 401 each time: keep the
    # lock-out (tested in test_jmap_core) out of its way
    jmap.env.running["jmap"].service.throttle = MemoryLoginThrottle(ThrottlePolicy(
        base_delay=0.0, max_delay=0.0, lockout_after=1_000_000))
    for i in range(3):
        await jmap.deliver(message(f"Fuzz {i}", msgid=f"fz{i}@x"))
    proc = await asyncio.create_subprocess_exec(
        st, "run", f"{jmap.base}/v1/openapi.json", "--checks", "all",
        "--max-examples", "10", "--seed", "20261123", "-H", f"Authorization: {jmap.auth}",
        "--url", jmap.base, "--no-color",
        cwd=tmp_path,  # schemathesis keeps a .schemathesis/ directory in its cwd
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]


async def test_rest_send_idempotent(jmap):
    body = {"to": ["bob@example.test", {"name": "Far", "email": "far@remote.example"}],
            "subject": "Via REST", "text": "Hello Bob", "client_mutation_id": "req-1"}
    status, first = await rest(jmap, "POST", "/v1/messages", json=body)
    assert status == 201, first
    status, again = await rest(jmap, "POST", "/v1/messages", json=body)
    assert status == 200 and again == first
    # filed in Sent, once; bob got exactly one copy
    status, folders = await rest(jmap, "GET", "/v1/folders")
    sent = next(f for f in folders["folders"] if f["role"] == "sent")
    drafts = next(f for f in folders["folders"] if f["role"] == "drafts")
    assert sent["total"] == 1 and drafts["total"] == 0
    from mailserver.store.mailstore import MailStore
    ms = MailStore(jmap.env.app.db)
    bob = jmap.env.account_ids["bob"]
    inbox = await ms.get_mailbox_by_path(bob, "INBOX")
    assert len(await ms.uid_map(bob, inbox.id)) == 1
    status, msg = await rest(jmap, "GET", f"/v1/messages/{first['id']}")
    assert msg["subject"] == "Via REST" and msg["read"] is True
    # refusals
    status, err = await rest(jmap, "POST", "/v1/messages",
                             json={"to": ["bob@example.test"], "text": "x",
                                   "from": "carol@example.test"})
    assert status == 403
    for bad in ({"text": "no recipient"}, {"to": ["bob@example.test"]},
                {"to": "bob@example.test", "text": "x"}, {"to": ["x"], "text": "x"},
                {"to": ["bob@example.test"], "text": "x", "extra": 1}):
        status, err = await rest(jmap, "POST", "/v1/messages", json=bad)
        assert status == 400, (bad, err)
