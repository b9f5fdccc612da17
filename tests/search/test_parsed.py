"""Index, search and threads fed by the real parser (parse_message), on both engines."""

from __future__ import annotations

import pytest

from mailserver.store.search import And, Date, HasAttachment, InThread, Text

parser = pytest.importorskip("mailserver.message.parser")

PARENT = b"""From: "Bob Smith" <bob@example.com>\r
To: alice@example.org\r
Subject: Hello =?utf-8?q?W=C3=B6rld?=\r
Message-ID: <m1@example.com>\r
Date: Tue, 14 Nov 2023 23:30:00 -0100\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary=b\r
\r
--b\r
Content-Type: text/html; charset=utf-8\r
\r
<p>Quick <b>brown</b> fox &amp; caf&eacute;</p>\r
--b\r
Content-Type: application/pdf\r
Content-Disposition: attachment; filename="Quarterly report.pdf"\r
\r
JVBERi0=\r
--b--\r
"""

REPLY = b"""From: alice@example.org\r
To: "Bob Smith" <bob@example.com>\r
Subject: RE: Fwd: hello w\xc3\xb6rld\r
Message-ID: <m2@example.org>\r
In-Reply-To: <m1@example.com>\r
References: <m1@example.com>\r
Content-Type: text/plain; charset=utf-8\r
\r
Sounds good.\r
"""


async def test_parsed_messages(mail):
    a = await mail.account("a@example.com")
    reply = await mail.add(a, parser.parse_message(REPLY), received_at=1_700_000_500)
    parent = await mail.add(a, parser.parse_message(PARENT), received_at=1_700_000_000)
    assert await mail.ids(a, Text("body", "brown cafe")) == {parent}  # HTML turned into text
    assert await mail.ids(a, Text("body", "quarterly")) == {parent}  # attachment filename
    assert await mail.ids(a, Text("subject", "wörld")) == {parent, reply}
    assert await mail.ids(a, Text("subject", "RLD")) == {parent, reply}
    assert await mail.ids(a, Text("from", "bob smith")) == {parent}
    assert await mail.ids(a, Text("to", "smith")) == {reply}
    assert await mail.ids(a, And(HasAttachment(), Text("text", "fox"))) == {parent}
    # Date: 23:30 at -0100 is 00:30 UTC on the 15th: days are UTC days
    assert await mail.ids(a, Date("sent", "on", 1_700_006_400)) == {parent}
    # the reply came first; the parent joins its thread (subjects agree after RE:/Fwd:)
    thread = (await mail.search(a, InThread(1)))
    assert thread == [reply, parent]
