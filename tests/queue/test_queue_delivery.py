"""Outbound delivery against real DNS (knot) and SMTP sinks on 127.0.0.x."""

from __future__ import annotations

import email
import email.policy

from qhelpers import FakeClock, message

from mailserver.queue.store import Recipient

NOW = 1_800_000_000


def _report(raw: bytes):
    """Parse a DSN with Python's email package; returns (message, per-recipient field dicts)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    blocks = parts[1].get_payload()  # per-message block, then one per recipient
    return msg, parts, [dict(b.items()) for b in blocks[1:]]


async def test_one_connection_per_domain_per_recipient_results_and_failure_dsn(qenv):
    def rcpt(addr: str) -> str:
        return "550 5.1.1 no such user" if addr.startswith("nobody") else "250 2.1.5 ok"

    sink = await qenv.sink("127.0.0.4", rcpt_reply=rcpt)
    clock = FakeClock(NOW)
    await qenv.enqueue(message("first"), "alice@example.test",
                       ["a@ok.remote.test", "nobody@ok.remote.test",
                        Recipient("b@ok.remote.test", orcpt="rfc822;B@ok.remote.test")],
                       now=NOW, envid="ENV-1")
    await qenv.enqueue(message("second"), "alice@example.test", ["c@ok.remote.test"], now=NOW)
    worker = qenv.worker(clock)
    await worker.run_until_idle()

    assert sink.sessions == 1  # both messages, every recipient: one connection
    assert [sorted(a for a, _ in m.rcpts) for m in sink.received] == [
        ["a@ok.remote.test", "b@ok.remote.test"], ["c@ok.remote.test"]]
    assert sink.received[0].mail_from == "alice@example.test"
    assert b"Subject: first" in sink.received[0].data
    assert await qenv.queue_rows() == []  # finished rows are gone

    # the 550 produced a failure DSN, delivered locally into alice's mailbox (null sender)
    inbox = await qenv.inbox("alice")
    assert len(inbox) == 1
    msg, parts, rcpts = _report(inbox[0])
    assert "Undelivered" in msg["Subject"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert rcpts == [{**rcpts[0], "Final-Recipient": "rfc822; nobody@ok.remote.test",
                      "Action": "failed", "Status": "5.1.1"}]
    assert "550 5.1.1 no such user" in rcpts[0]["Diagnostic-Code"]
    assert rcpts[0]["Remote-MTA"] == "dns; mx.ok.remote.test"
    meta = dict(parts[1].get_payload()[0].items())
    assert meta["Original-Envelope-Id"] == "ENV-1"
    assert parts[2].get_content_type() == "message/rfc822"  # no RET: failures carry it all
    assert "Subject: first" in parts[2].as_string()


async def test_primary_mx_down_secondary_gets_the_mail(qenv):
    backup = await qenv.sink("127.0.0.3")  # 127.0.0.2 (preference 10) has no server
    await qenv.enqueue(message(), "alice@example.test", ["x@backup.remote.test"], now=NOW)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert backup.recipients() == ["x@backup.remote.test"]
    assert await qenv.queue_rows() == []


async def test_primary_answers_4xx_then_secondary(qenv):
    primary = await qenv.sink("127.0.0.7", mail_reply="451 4.3.2 system busy")
    backup = await qenv.sink("127.0.0.3")
    await qenv.enqueue(message(), "alice@example.test", ["x@busy.remote.test"], now=NOW)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert primary.sessions == 1 and primary.received == []
    assert backup.recipients() == ["x@busy.remote.test"]
    assert await qenv.queue_rows() == []


async def test_greeting_4xx_then_secondary(qenv):
    primary = await qenv.sink("127.0.0.7", greeting="421 4.3.2 too busy")
    backup = await qenv.sink("127.0.0.3")
    await qenv.enqueue(message(), "alice@example.test", ["y@busy.remote.test"], now=NOW)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert primary.sessions == 1
    assert backup.recipients() == ["y@busy.remote.test"]


async def test_implicit_mx_and_cname_followed(qenv):
    sink = await qenv.sink("127.0.0.4")
    await qenv.enqueue(message(), "alice@example.test",
                       ["i@implicit.remote.test", "c@cname.remote.test"], now=NOW)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert sorted(sink.recipients()) == ["c@cname.remote.test", "i@implicit.remote.test"]


async def test_4xx_is_retried_on_the_schedule(qenv):
    sink = await qenv.sink("127.0.0.5", rcpt_reply=lambda a: "451 4.7.1 greylisted")
    clock = FakeClock(NOW)
    await qenv.enqueue(message(), "alice@example.test", ["g@temp.remote.test"], now=NOW)
    worker = qenv.worker(clock)
    schedule = qenv.app.config.queue.retry_schedule  # 1m, 5m, 15m, … (±10% jitter)
    due = NOW
    for attempt, delay in enumerate(schedule[:3], start=1):
        assert await worker.run_until_idle() == 1
        (row,) = await qenv.queue_rows()
        assert row.attempts == attempt and row.last_status == "4.7.1"
        assert "451 4.7.1 greylisted" in row.last_error
        wait = row.next_attempt_at - clock.t
        assert 0.9 * delay - 1 <= wait <= 1.1 * delay + 1, (attempt, wait, delay)
        clock.advance(wait - 1)  # not due yet: nothing is claimed
        assert await worker.run_until_idle() == 0
        clock.advance(1)
        due = row.next_attempt_at
    assert sink.sessions == 3
    sink.rcpt_reply = lambda a: "250 2.1.5 ok"
    assert clock.t == due
    assert await worker.run_until_idle() == 1
    assert sink.recipients() == ["g@temp.remote.test"]
    assert await qenv.queue_rows() == []
    assert await qenv.inbox("alice") == []  # no DSN: default NOTIFY, under the delay time


async def test_null_mx_bounces_at_once_and_null_sender_gets_no_dsn(qenv):
    await qenv.enqueue(message(), "alice@example.test", ["n@nullmx.remote.test"], now=NOW)
    await qenv.enqueue(message("bounce"), "", ["n@nullmx.remote.test"], now=NOW)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert await qenv.queue_rows() == []
    inbox = await qenv.inbox("alice")
    assert len(inbox) == 1  # only the message with a sender bounced
    _msg, _parts, rcpts = _report(inbox[0])
    assert rcpts[0]["Status"] == "5.1.10" and rcpts[0]["Action"] == "failed"  # RFC 7505


async def test_notify_never_and_success(qenv):
    sink = await qenv.sink("127.0.0.6", extensions=["PIPELINING"],  # no DSN extension
                           rcpt_reply=lambda a: "550 5.1.1 unknown" if a.startswith("x")
                           else "250 ok")
    await qenv.enqueue(message("never"), "alice@example.test",
                       [Recipient("x@plain.remote.test", frozenset({"NEVER"})),
                        Recipient("ok@plain.remote.test", frozenset({"SUCCESS"}))],
                       now=NOW, ret="HDRS")
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert sink.recipients() == ["ok@plain.remote.test"]
    inbox = await qenv.inbox("alice")
    assert len(inbox) == 1  # NEVER: no failure DSN; SUCCESS to a non-DSN peer: "relayed"
    msg, parts, rcpts = _report(inbox[0])
    assert rcpts[0]["Action"] == "relayed" and rcpts[0]["Status"] == "2.0.0"
    assert rcpts[0]["Final-Recipient"] == "rfc822; ok@plain.remote.test"
    assert parts[2].get_content_type() == "text/rfc822-headers"  # RET=HDRS


async def test_dsn_parameters_passed_to_a_dsn_peer(qenv):
    sink = await qenv.sink("127.0.0.4", extensions=["PIPELINING", "DSN", "8BITMIME"])
    await qenv.enqueue(message(), "alice@example.test",
                       [Recipient("d@ok.remote.test", frozenset({"SUCCESS", "FAILURE"}),
                                  "rfc822;D@ok.remote.test")], now=NOW, ret="FULL",
                       envid="id 1")
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    (m,) = sink.received
    assert "RET=FULL" in m.mail_params and "ENVID=id+201" in m.mail_params
    assert m.rcpts == [("d@ok.remote.test",
                        ["NOTIFY=FAILURE,SUCCESS", "ORCPT=rfc822;D@ok.remote.test"])]
    assert await qenv.inbox("alice") == []  # the DSN peer reports success itself


async def test_starttls_is_used_when_offered(qenv):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_dir = qenv.env.data_dir / "tls"
    ctx.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
    sink = await qenv.sink("127.0.0.8", tls=ctx)
    await qenv.enqueue(message(), "alice@example.test", ["t@tls.remote.test"], now=NOW,
                       requiretls=False)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert [m.tls for m in sink.received] == [True]


async def test_requiretls_bounces_without_tls(qenv):
    sink = await qenv.sink("127.0.0.4")
    await qenv.enqueue(message(), "alice@example.test", ["r@ok.remote.test"], now=NOW,
                       requiretls=True)
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    assert sink.received == []
    _msg, _parts, rcpts = _report((await qenv.inbox("alice"))[0])
    assert rcpts[0]["Status"] == "5.7.30"  # RFC 8689 §5


async def test_smtputf8_bounce_and_8bitmime_downgrade(qenv):
    sink = await qenv.sink("127.0.0.6", extensions=["PIPELINING"])  # neither extension
    await qenv.enqueue(message("utf8").replace(b"Subject: utf8", "Subject: Grüße".encode()),
                       "alice@example.test", ["u@plain.remote.test"], now=NOW, smtputf8=True)
    await qenv.enqueue(message("ascii"), "alice@example.test", ["a@plain.remote.test"],
                       now=NOW, smtputf8=True)  # flagged, but nothing needs SMTPUTF8
    await qenv.enqueue(message("eight", body="Grüße aus Köln\r\n"), "alice@example.test",
                       ["e@plain.remote.test"], now=NOW, body="8BITMIME")
    await qenv.worker(FakeClock(NOW)).run_until_idle()
    ascii_msg, m = sink.received
    assert ascii_msg.rcpts[0][0] == "a@plain.remote.test"
    assert "SMTPUTF8" not in ascii_msg.mail_params
    assert m.rcpts[0][0] == "e@plain.remote.test" and "BODY=8BITMIME" not in m.mail_params
    assert m.data.isascii()
    sent = email.message_from_bytes(m.data, policy=email.policy.default)
    assert sent["Content-Transfer-Encoding"] == "quoted-printable"
    assert sent.get_content().rstrip("\r\n") == "Grüße aus Köln"
    _msg, _parts, rcpts = _report((await qenv.inbox("alice"))[0])
    assert rcpts[0]["Status"] == "5.6.7"


async def test_expiry_gives_a_failure_dsn_and_delay_dsn_is_sent_once(qenv):
    await qenv.sink("127.0.0.5", rcpt_reply=lambda a: "452 4.2.2 mailbox full")
    clock = FakeClock(NOW)
    cfg = qenv.app.config.queue
    await qenv.enqueue(message(), "alice@example.test", ["q@temp.remote.test"], now=NOW)
    worker = qenv.worker(clock)
    await worker.run_until_idle()  # attempt 1 at t=0: deferred, no delay DSN yet
    assert await qenv.inbox("alice") == []
    clock.t = NOW + cfg.delay_dsn_after  # past the delay-DSN threshold
    await worker.run_until_idle()
    inbox = await qenv.inbox("alice")
    assert len(inbox) == 1
    msg, parts, rcpts = _report(inbox[0])
    assert rcpts[0]["Action"] == "delayed" and rcpts[0]["Status"] == "4.2.2"
    assert "Will-Retry-Until" in rcpts[0]
    assert parts[2].get_content_type() == "text/rfc822-headers"
    (row,) = await qenv.queue_rows()
    clock.t = row.next_attempt_at
    await worker.run_until_idle()
    assert len(await qenv.inbox("alice")) == 1  # the delay DSN is sent once
    clock.t = NOW + cfg.max_age  # too old: the next temporary failure is final
    await worker.run_until_idle()
    assert await qenv.queue_rows() == []
    inbox = await qenv.inbox("alice")
    assert len(inbox) == 2
    _msg, _parts, rcpts = _report(inbox[1])
    assert rcpts[0]["Action"] == "failed" and rcpts[0]["Status"] == "4.2.2"


async def test_unreachable_domain_is_deferred_not_lost(qenv):
    # nothing listens on any address of backup.remote.test
    clock = FakeClock(NOW)
    await qenv.enqueue(message(), "alice@example.test", ["z@backup.remote.test"], now=NOW)
    await qenv.worker(clock).run_until_idle()
    (row,) = await qenv.queue_rows()
    assert row.attempts == 1 and row.last_status == "4.4.1"
    assert row.lease_owner is None and row.next_attempt_at > NOW


async def test_local_domain_goes_through_the_ingest_path_with_forwards(qenv):
    sink = await qenv.sink("127.0.0.4")
    await qenv.app.directory.add_alias("fwd@example.test", "far@ok.remote.test")
    await qenv.enqueue(message("local"), "carol@ok.remote.test",
                       ["bob@example.test", "fwd@example.test", "ghost@example.test"], now=NOW)
    worker = qenv.worker(FakeClock(NOW))
    await worker.run_until_idle()
    (stored,) = await qenv.inbox("bob")  # delivered locally, not over SMTP to ourselves
    assert b"Subject: local" in stored
    (forwarded,) = [m for m in sink.received if m.mail_from]  # the alias's remote target
    assert forwarded.rcpts[0][0] == "far@ok.remote.test"
    assert forwarded.mail_from == "carol@ok.remote.test"
    # ghost@ is unknown: a failure DSN went back to the (remote) sender over SMTP
    (dsn_msg,) = [m for m in sink.received if m.mail_from == ""]
    assert dsn_msg.rcpts[0][0] == "carol@ok.remote.test"
    _msg, _parts, rcpts = _report(dsn_msg.data)
    assert rcpts[0]["Status"] == "5.1.1" and "ghost@example.test" in rcpts[0]["Final-Recipient"]
    assert await qenv.queue_rows() == []
