"""The SMTP client's reply reader and DATA preparation: unit and property tests."""

from __future__ import annotations

import asyncio
import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mailserver.queue.dsn import DsnEntry, build_dsn
from mailserver.queue.smtpclient import Reply, SmtpClient, SmtpClientError, prepare_data, xtext


def _read(data: bytes) -> Reply:
    async def run() -> Reply:
        reader = asyncio.StreamReader(limit=4096 * 4)
        reader.feed_data(data)
        reader.feed_eof()
        return await SmtpClient(reader, None, timeout=1.0, peer="test").read_reply()  # type: ignore[arg-type]
    return asyncio.run(run())


def test_multiline_reply_and_enhanced_status():
    r = _read(b"250-mx.example\r\n250-PIPELINING\r\n250 2.0.0 SIZE 100\r\n")
    assert r.code == 250 and r.lines == ("mx.example", "PIPELINING", "2.0.0 SIZE 100")
    assert _read(b"550 5.1.1 no such user\r\n").status == "5.1.1"
    assert _read(b"451 try later\r\n").status == "4.0.0"  # derived from the basic code
    assert _read(b"451 5.1.1 mismatched class\r\n").status == "4.0.0"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_reply_reader_never_raises_anything_else(data):
    try:
        r = _read(data)
    except SmtpClientError:
        return
    assert 100 <= r.code <= 999


@given(st.binary(max_size=500))
def test_prepare_data_is_dot_stuffed_and_terminated(raw):
    out = prepare_data(raw)
    assert out.endswith(b"\r\n.\r\n")
    lines = out[:-3].split(b"\r\n")[:-1]
    assert all(b"\n" not in ln for ln in lines)  # every LF is part of a CRLF
    assert all(ln != b"." for ln in lines)  # the terminator cannot occur early
    # un-stuffing gives back the CRLF-normalized input
    unstuffed = b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines) + b"\r\n"
    norm = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if raw.count(b"\n") == raw.count(b"\r\n"):
        norm = raw
    assert unstuffed == (norm if norm.endswith(b"\r\n") else norm + b"\r\n")


def test_xtext():
    assert xtext("a b+c=d") == "a+20b+2Bc+3Dd"


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80), st.text(max_size=40), st.sampled_from(["FULL", "HDRS", None]))
def test_dsn_always_parses(diagnostic, envid, ret):
    raw = build_dsn(reporting_mta="mx.example.test", sender="s@example.test",
                    original="Subject: ü\r\n\r\nbody\r\n".encode(),
                    entries=[DsnEntry("r@remote.test", "failed", "5.1.1", diagnostic,
                                      orcpt="rfc822;R@remote.test")],
                    ret=ret, envid=envid or None, arrival_date=1_800_000_000, now=1_800_000_100)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"]
    fields = dict(parts[1].get_payload()[1].items())
    assert fields["Status"] == "5.1.1" and fields["Action"] == "failed"
    assert fields["Original-Recipient"] == "rfc822; R@remote.test"
