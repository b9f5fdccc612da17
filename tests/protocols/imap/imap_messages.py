"""A hand-built MIME tree over a real message, offsets computed from the bytes."""

from __future__ import annotations

from mailserver.message.model import Address, MimePart, ParsedMessage

INNER_HEADER = (
    b"From: inner@example.org\r\nSubject: inner\r\n"
    b'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
)
INNER_BODY = (
    b"--b2\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
    b"--b2\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b2--"
)
OUTER_HEADER = (
    b'From: "Doe, John" <john@example.com>\r\n'
    b"To: undisclosed-recipients:;\r\n"
    b'Cc: A Group: a@x.org, "B" <b@y.org>;, c@z.net (Carl)\r\n'
    b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n folded\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"Message-ID: <1234@local.machine.example>\r\n"
    b"In-Reply-To: <abc@x>\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
)
P1_HEADER = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
P1_BODY = b"Gr=C3=BC=C3=9Fe\r\nline2=\r\n joined"
P2_HEADER = b"Content-Type: message/rfc822\r\n\r\n"
P3_HEADER = (
    b'Content-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
    b'Content-Disposition: attachment; filename="a.pdf"\r\nContent-Language: en, de\r\n'
    b"Content-Location: http://x/a.pdf\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\n"
)
P3_BODY = b"JVBERi0x\r\nLjQK"

RAW = (
    OUTER_HEADER
    + b"preamble\r\n--b1\r\n"
    + P1_HEADER
    + P1_BODY
    + b"\r\n--b1\r\n"
    + P2_HEADER
    + INNER_HEADER
    + INNER_BODY
    + b"\r\n--b1\r\n"
    + P3_HEADER
    + P3_BODY
    + b"\r\n--b1--\r\n"
)


def _at(needle: bytes, start: int = 0) -> tuple[int, int]:
    i = RAW.index(needle, start)
    return i, i + len(needle)


def build() -> ParsedMessage:
    p1h = _at(P1_HEADER)
    p1b = _at(P1_BODY, p1h[1])
    p2h = _at(P2_HEADER)
    ih = _at(INNER_HEADER, p2h[1])
    ib = _at(INNER_BODY, ih[1])
    a_h = _at(b"Content-Type: text/plain\r\n\r\n", ib[0])
    a_b = _at(b"plain", a_h[1])
    b_h = _at(b"Content-Type: text/html\r\n\r\n", a_b[1])
    b_b = _at(b"<p>html</p>", b_h[1])
    p3h = _at(P3_HEADER)
    p3b = _at(P3_BODY, p3h[1])
    inner_root = MimePart(
        "2",
        ih[0],
        ih[1],
        ih[1],
        ib[1],
        "multipart/alternative",
        params=(("boundary", "b2"),),
        children=(
            MimePart("2.1", a_h[0], a_h[1], a_b[0], a_b[1], "text/plain", lines=1),
            MimePart(
                "2.2",
                b_h[0],
                b_h[1],
                b_b[0],
                b_b[1],
                "text/html",
                params=(("charset", "utf-8"),),
                lines=1,
            ),
        ),
    )
    inner = ParsedMessage(
        size=ib[1] - ih[0],
        header_end=ih[1],
        subject="inner",
        from_=(Address("", "inner@example.org"),),
        envelope_raw=(("from", "inner@example.org"), ("subject", "inner")),
    )
    root = MimePart(
        "",
        0,
        len(OUTER_HEADER),
        len(OUTER_HEADER),
        len(RAW),
        "multipart/mixed",
        params=(("boundary", "b1"),),
        children=(
            MimePart(
                "1",
                p1h[0],
                p1h[1],
                p1b[0],
                p1b[1],
                "text/plain",
                params=(("charset", "utf-8"),),
                content_transfer_encoding="quoted-printable",
                lines=3,
            ),
            MimePart(
                "2",
                p2h[0],
                p2h[1],
                ih[0],
                ib[1],
                "message/rfc822",
                lines=RAW[ih[0] : ib[1]].count(b"\n") + 1,
                children=(inner_root,),
                embedded=inner,
            ),
            MimePart(
                "3",
                p3h[0],
                p3h[1],
                p3b[0],
                p3b[1],
                "application/pdf",
                params=(("name", "a.pdf"),),
                disposition="attachment",
                disposition_params=(("filename", "a.pdf"),),
                content_transfer_encoding="base64",
                content_language=("en", "de"),
                content_location="http://x/a.pdf",
                content_md5="Q2hlY2sgSW50ZWdyaXR5IQ==",
                filename="a.pdf",
            ),
        ),
    )
    env = tuple(
        (k, v)
        for k, v in (
            ("from", '"Doe, John" <john@example.com>'),
            ("to", "undisclosed-recipients:;"),
            ("cc", 'A Group: a@x.org, "B" <b@y.org>;, c@z.net (Carl)'),
            ("subject", "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n folded"),
            ("date", "Mon, 7 Feb 1994 21:52:25 -0800"),
            ("message-id", "<1234@local.machine.example>"),
            ("in-reply-to", "<abc@x>"),
        )
    )
    return ParsedMessage(
        size=len(RAW),
        header_end=len(OUTER_HEADER),
        subject="Grüße folded",
        structure=root,
        envelope_raw=env,
    )
