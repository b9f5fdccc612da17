"""The daemon driven by a third-party client library: ``jmapc`` (synchronous, over HTTPS).

jmapc fetches ``https://HOST/.well-known/jmap`` and follows the session's URLs, so this also
checks that the session resource's URLs work for a client that knows nothing else.
"""

from __future__ import annotations

import asyncio

import pytest

from jmap_testlib import jmapc_client, message

jmapc = pytest.importorskip("jmapc")

from jmapc import Comparator, EmailQueryFilterCondition, MailboxQueryFilterCondition, Ref  # noqa: E402
from jmapc.methods import (  # noqa: E402
    CoreEcho,
    EmailGet,
    EmailQuery,
    EmailSet,
    MailboxGet,
    MailboxQuery,
    ThreadGet,
)


async def test_jmapc_session_query_get_set(tls_jmap):
    j, host, cafile = tls_jmap
    await j.deliver(message("Via jmapc", "hello from a library", msgid="lib@x"))
    await j.deliver(message("Second", "another", msgid="lib2@x"))

    def run() -> dict:
        client = jmapc_client(host, cafile)
        out: dict = {"account": client.account_id}
        out["echo"] = client.request(CoreEcho(data={"hello": "world"}))
        results = client.request([
            MailboxQuery(filter=MailboxQueryFilterCondition(role="inbox")),
            MailboxGet(ids=Ref("/ids")),
            EmailQuery(filter=EmailQueryFilterCondition(text="library"),
                       sort=[Comparator(property="receivedAt", is_ascending=False)]),
            EmailGet(ids=Ref("/ids"), properties=["id", "subject", "threadId", "keywords"]),
        ])
        out["results"] = results
        email = results[3].response.data[0]
        out["set"] = client.request(EmailSet(update={email.id: {"keywords/$seen": True}}))
        out["thread"] = client.request(ThreadGet(ids=[email.thread_id]))
        out["after"] = client.request(EmailGet(ids=[email.id], properties=["keywords"]))
        return out

    out = await asyncio.to_thread(run)
    assert out["account"] == j.account
    assert out["echo"].data == {"hello": "world"}
    inbox = out["results"][1].response.data[0]
    assert inbox.role == "inbox" and inbox.total_emails == 2
    [email] = out["results"][3].response.data
    assert email.subject == "Via jmapc"
    assert email.id in out["set"].updated
    assert out["thread"].data[0].email_ids == [email.id]
    assert out["after"].data[0].keywords == {"$seen": True}
