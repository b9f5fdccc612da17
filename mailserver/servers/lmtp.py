"""The LMTP daemon (RFC 2033): final delivery into our store for another MTA (Postfix, Exim).

Listens on a unix socket (default ``{data_dir}/lmtp.sock``, mode 0660) or TCP. The session
loop is ``smtpsession``'s with the machine in LMTP mode: LHLO instead of EHLO, PIPELINING
always, and after the data one reply per accepted recipient, in RCPT order (§4.2) — each one
the outcome of that recipient in the ingest path, given only after the commit.

Only hosted addresses are accepted (550 5.1.1 for anything else: LMTP is final delivery, there
is no relaying). The upstream MTA wrote the trace fields; we add ``Return-Path:`` (RFC 5321
§4.4) and our own ``Received:`` line. No AUTH and no TLS: the socket's permissions (or a
loopback/private address) are the access control.
"""

from __future__ import annotations

import logging
from typing import Any

from mailserver.servers.base import Connection
from mailserver.servers.smtp import R_UNKNOWN_USER, LocalRecipients, outcome_reply
from mailserver.servers.smtpsession import R_TEMP, SmtpDaemon, SmtpSession, protocol_config
from protocols.smtp import MessageComplete, RcptTo, Reply, ServerConfig


class LmtpDaemon(SmtpDaemon):
    name = "lmtp"
    protocol = "LMTP"

    def __init__(self, app: Any, section: Any) -> None:
        super().__init__(app, section)
        self.local = LocalRecipients(app)

    def session_config(self, conn: Connection) -> ServerConfig:
        return protocol_config(self.app, lmtp=True)

    async def on_rcpt(self, s: SmtpSession, event: RcptTo) -> Reply | None:
        mail = s.sm.mail_from
        size = mail.params.size if mail is not None else None
        address, refusal, local = await self.local.check(event.address, size)
        if not local:
            return R_UNKNOWN_USER
        if refusal is not None:
            return refusal
        s.data.setdefault("rcpts", {})[event.address] = address
        return None

    async def on_message(self, s: SmtpSession, event: MessageComplete) -> bytes:
        sm = s.sm
        rcpt_map: dict[str, str] = s.data.get("rcpts", {})
        targets = [rcpt_map.get(r.address, r.address) for r in event.recipients]
        raw = (f"Return-Path: <{event.mail_from.address}>\r\n".encode("utf-8", "surrogateescape")
               + self.received_header(s, event.recipients) + event.data)
        try:
            result = await self.app.deliverer.deliver(raw, targets)
        except Exception:
            s.log(logging.ERROR, "delivery failed", event="delivery_error", exc_info=True)
            return sm.send_lmtp_replies([R_TEMP] * len(targets))
        replies = [outcome_reply(result[t].status, r.address, lmtp=True)
                   for t, r in zip(targets, event.recipients)]
        s.log(logging.INFO, f"message {len(raw)} octets: "
              + " ".join(str(r.code) for r in replies), event="message", size=len(raw))
        return sm.send_lmtp_replies(replies)


async def start(app: Any, section: Any) -> LmtpDaemon:
    return await LmtpDaemon(app, section).start()  # type: ignore[return-value]
