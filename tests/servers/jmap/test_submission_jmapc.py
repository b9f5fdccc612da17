"""Identity, EmailSubmission and VacationResponse driven by the third-party ``jmapc`` client
(its models parse our responses: deliveryStatus enums, envelopes, dates)."""

from __future__ import annotations

import asyncio

import pytest

jmapc = pytest.importorskip("jmapc")

from jmapc import Ref
from jmapc.methods import (
    CustomMethod,
    EmailSubmissionChanges,
    EmailSubmissionGet,
    EmailSubmissionQuery,
    IdentityGet,
    IdentitySet,
)
from jmapc.models import (
    EmailSubmissionQueryFilterCondition,
    EmailSubmissionQueryFilterOperator,
    Operator,
)

from jmap_testlib import jmapc_client

VAC = "urn:ietf:params:jmap:vacationresponse"


async def test_jmapc_identity_submission_vacation(tls_jmap):
    j, host, cafile = tls_jmap
    drafts = await j.mailbox("drafts")
    state0 = (await j.ok("EmailSubmission/get", {"ids": []},
                         ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:submission"])
              )["state"]
    for subject, to in (("One", "bob@example.test"), ("Two", "far@remote.example")):
        r = await j.ok("Email/set", {"create": {"d": {
            "mailboxIds": {drafts: True}, "from": [{"email": "alice@example.test"}],
            "to": [{"email": to}], "subject": subject,
            "bodyValues": {"b": {"value": subject}}, "textBody": [{"partId": "b"}]}}})
        sub = await j.ok("EmailSubmission/set", {"create": {"s": {
            "identityId": f"i{j.env.account_ids['alice']}",
            "emailId": r["created"]["d"]["id"]}}},
            ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:submission"])
        assert "s" in sub["created"]

    def run() -> dict:
        client = jmapc_client(host, cafile)
        out: dict = {}
        out["identities"] = client.request(IdentityGet())
        out["identity_set"] = client.request(IdentitySet(create={"w": {
            "email": "alice+work@example.test", "name": "Alice (work)"}}))
        out["query"] = client.request([
            EmailSubmissionQuery(filter=EmailSubmissionQueryFilterOperator(
                operator=Operator.OR, conditions=[
                    EmailSubmissionQueryFilterCondition(undo_status="final"),
                    EmailSubmissionQueryFilterCondition(identity_ids=["i0"])])),
            EmailSubmissionGet(ids=Ref("/ids")),
        ])
        out["changes"] = client.request(EmailSubmissionChanges(since_state=state0))
        # CustomMethod sends ``data`` as is: the accountId is ours to give
        set_vac = CustomMethod(data={"accountId": client.account_id, "update": {"singleton": {
            "isEnabled": True, "subject": "Away", "textBody": "Back soon"}}})
        set_vac.jmap_method = "VacationResponse/set"
        set_vac.using = {VAC}
        get_vac = CustomMethod(data={"accountId": client.account_id, "ids": None})
        get_vac.jmap_method = "VacationResponse/get"
        get_vac.using = {VAC}
        out["vacation"] = client.request([set_vac, get_vac])
        return out

    out = await asyncio.to_thread(run)
    [ident] = out["identities"].data
    assert ident.email == "alice@example.test" and ident.may_delete is False
    assert out["identity_set"].created["w"].id
    query, got = out["query"]
    assert len(query.response.ids) == 2
    by_subject = {s.id: s for s in got.response.data}
    statuses = [{rcpt: (st.delivered.value, st.smtp_reply)
                 for rcpt, st in s.delivery_status.items()} for s in by_subject.values()]
    assert {"bob@example.test": ("yes", "250 2.0.0 delivered")} in statuses
    assert {"far@remote.example": ("queued", "250 2.0.0 queued")} in statuses
    assert all(s.undo_status.value == "final" and s.send_at for s in by_subject.values())
    assert sorted(out["changes"].created) == sorted(by_subject)
    set_resp, get_resp = out["vacation"]
    assert set_resp.response.data["updated"] == {"singleton": None}, set_resp.response
    assert get_resp.response.data["list"][0]["subject"] == "Away"
