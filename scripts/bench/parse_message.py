"""Benchmark: parse_message on typical shapes, against Python's email package on the same bytes.

Run: .venv/bin/python scripts/bench/parse_message.py  (figures on the last lines)
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import time
import timeit

from mailserver.message import parse_message

NL = b"\r\n"
CPU = time.process_time

HEADERS = NL.join(
    [
        b"Return-Path: <alice@example.org>",
        b"Received: from mail.example.org (mail.example.org [192.0.2.1])",
        b"\tby mx.example.net with ESMTPS id 4VZ1234; Mon, 6 May 2024 09:15:02 +0000",
        b"Received: from [10.0.0.5] by mail.example.org with ESMTPSA; Mon, 6 May 2024 09:15:01",
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s1;",
        b" h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;",
        b" b=" + base64.b64encode(os.urandom(256)),
        b"Authentication-Results: mx.example.net; dkim=pass header.d=example.org; spf=pass",
        b"From: Alice Example <alice@example.org>",
        b'To: Bob <bob@example.net>, "Carol, C." <carol@example.net>',
        b"Cc: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>",
        b"Subject: Re: [team] =?utf-8?q?Quarterly_report_=E2=80=94_draft?=",
        b"Date: Mon, 6 May 2024 11:15:00 +0200",
        b"Message-ID: <20240506091500.1234@mail.example.org>",
        b"In-Reply-To: <prev@example.net>",
        b"References: <a@example.net> <b@example.net> <prev@example.net>",
        b"MIME-Version: 1.0",
    ]
)

PARA = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"


def plain(size: int) -> bytes:
    body = PARA * (size // len(PARA))
    return HEADERS + NL + b"Content-Type: text/plain; charset=utf-8" + NL + NL + body


def with_attachment(attachment_bytes: int, html_paras: int = 20) -> bytes:
    html = b"<html><body>" + (b"<p>" + PARA.strip() + b"</p>\r\n") * html_paras + b"</body></html>"
    att = base64.encodebytes(os.urandom(attachment_bytes)).replace(b"\n", NL)
    return NL.join(
        [
            HEADERS,
            b'Content-Type: multipart/mixed; boundary="mix"',
            b"",
            b"--mix",
            b'Content-Type: multipart/alternative; boundary="alt"',
            b"",
            b"--alt",
            b"Content-Type: text/plain; charset=utf-8",
            b"",
            PARA * 20,
            b"--alt",
            b"Content-Type: text/html; charset=utf-8",
            b"Content-Transfer-Encoding: quoted-printable",
            b"",
            html,
            b"--alt--",
            b"",
            b"--mix",
            b'Content-Type: application/pdf; name="report.pdf"',
            b'Content-Disposition: attachment; filename="report.pdf"',
            b"Content-Transfer-Encoding: base64",
            b"",
            att + b"--mix--",
            b"",
        ]
    )


def html_only(size: int) -> bytes:
    row = b"<tr><td style='p'>" + PARA.strip() + b" <b>bold</b> &amp; more&nbsp;text</td></tr>\r\n"
    html = b"<html><head><style>td{}</style></head><body><table>" + row * (size // len(row))
    return HEADERS + NL + b"Content-Type: text/html; charset=utf-8" + NL + NL + html + b"</table>"


def bench(raw: bytes) -> tuple[float, float]:
    n = 200
    # process CPU time: the figures stay meaningful on a busy machine
    ours = min(timeit.repeat(lambda: parse_message(raw), number=n, repeat=15, timer=CPU)) / n
    m = 30

    def stdlib() -> None:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                part.get_content()
        str(msg["subject"]), msg["to"].addresses, msg["date"].datetime

    theirs = min(timeit.repeat(stdlib, number=m, repeat=3, timer=CPU)) / m
    return ours, theirs


def main() -> None:
    cases = [
        ("5 KB text/plain", plain(5_000)),
        ("50 KB mixed + 36 KB PDF", with_attachment(36_000)),
        ("200 KB mixed + 140 KB PDF, 30 KB HTML", with_attachment(140_000, html_paras=350)),
        ("2 MB mixed + 1.5 MB PDF", with_attachment(1_500_000)),
        ("200 KB HTML-only newsletter", html_only(200_000)),
    ]
    for name, raw in cases:
        ours, theirs = bench(raw)
        print(
            f"{name:40s} {len(raw):>9d} B  parse_message {ours * 1e3:7.3f} ms"
            f"   email pkg {theirs * 1e3:8.3f} ms   x{theirs / ours:5.1f}"
        )
    print("(CPU time, best of repeats; the email pkg column parses and decodes text parts but")
    print(" does no HTML-to-text, which is most of parse_message's time on HTML-only mail)")


if __name__ == "__main__":
    main()
