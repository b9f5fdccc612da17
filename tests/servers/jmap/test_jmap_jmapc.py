"""The daemon driven by a third-party client library: ``jmapc`` (synchronous, over HTTPS).

jmapc fetches ``https://HOST/.well-known/jmap`` and follows the session's URLs, so this also
checks that the session resource's URLs work for a client that knows nothing else.
"""

from __future__ import annotations

import asyncio

import pytest

from jmap_testlib import message

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

from mailserver.testing.daemons import PASSWORD  # noqa: E402


@pytest.fixture
async def tls_jmap(make_jmap, tmp_path):
    async with make_jmap() as j:
        # a second daemon on an HTTPS listener: jmapc only speaks https
        from mailserver.servers.jmap import start
        from dataclasses import replace

        section = replace(j.env.app.config.jmap, listen=(), listen_tls=("127.0.0.1:0",))
        daemon = await start(j.env.app, section)
        try:
            [(_lst, sockname)] = daemon.bound
            yield j, f"127.0.0.1:{sockname[1]}", str(j.env.data_dir / "tls" / "cert.pem")
        finally:
            await daemon.stop()


def _client(host: str, cafile: str) -> "jmapc.Client":
    import ssl

    from requests.adapters import HTTPAdapter

    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # the test certificate names mail.example.test, we dial 127.0.0.1

    class TestCA(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = ctx
            kwargs["assert_hostname"] = False
            return super().init_poolmanager(*args, **kwargs)

    client = jmapc.Client.create_with_password(host, "alice@example.test", PASSWORD)
    session = client.requests_session
    session.trust_env = False
    session.verify = cafile
    session.mount("https://", TestCA())
    return client


async def test_jmapc_session_query_get_set(tls_jmap):
    j, host, cafile = tls_jmap
    await j.deliver(message("Via jmapc", "hello from a library", msgid="lib@x"))
    await j.deliver(message("Second", "another", msgid="lib2@x"))

    def run() -> dict:
        client = _client(host, cafile)
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
