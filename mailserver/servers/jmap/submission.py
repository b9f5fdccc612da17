"""EmailSubmission (RFC 8621 §7): sending a stored Email, the way SMTP submission sends.

EmailSubmission/set create follows the submission daemon's rules (``mailserver.servers.smtp``):
the envelope sender and every ``From:`` address must belong to the account (its login or an
alias; ``+tag`` allowed) — else ``forbiddenMailFrom`` / ``forbiddenFrom``; the ``Bcc:`` field is
removed (§7.5); the message is DKIM-signed as its From: domain with the domain's active keys;
remote recipients are written to the outbound queue (blob first, then the queue rows in one
transaction) and local ones go through the ingest path — and the submission is reported created
only after both committed.

- Without an ``envelope`` the server derives it (§7.5): MAIL FROM the Sender:, else the From:
  address; RCPT TO every To/Cc/Bcc address.
- No delayed send (``maxDelayedSend`` 0): ``undoStatus`` is "final" at once and cancelling
  answers ``cannotUnsend``.
- ``identityId`` must name one of the account's identities (``identity``).
- Local recipients get the message through the ingest path with ``Return-Path:`` (RFC 5321
  §4.4: we are their final delivery), which is also what vacation auto-replies answer to.
- ``deliveryStatus``: local recipients are "yes" (or "no" with the reply) at once; remote ones
  are read at every /get from the queue (``mailserver.store.submissions``): "queued" while
  the recipient is in the queue (``smtpReply`` = the last attempt's reply once one failed),
  then the final "yes"/"no" and reply the queue worker records when it finishes the
  recipient. A recipient that left the queue without a recorded outcome reads "unknown".
  These updates do not change the state string (the worker does not lock accounts).
- ``onSuccessUpdateEmail`` / ``onSuccessDestroyEmail`` run as an implicit Email/set whose
  response follows the EmailSubmission/set response (§7.5).
- Creations and destructions are in the change log (``EmailSubmission``), which serves
  EmailSubmission/changes and /queryChanges; /query filters on identityIds, emailIds,
  threadIds, undoStatus, before and after (sendAt) and sorts by emailId, threadId, sentAt.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, false, func, insert, not_, or_, select, true

from mailserver.mailauth import signing
from mailserver.message.headers import header_text, parse_addresses, split_header_fields
from mailserver.servers.jmap import emailview as ev
from mailserver.servers.jmap import errors, ids, queries
from mailserver.servers.jmap.core import (
    SUBMISSION,
    Call,
    JmapCore,
    arg,
    string_list,
    unsigned,
)
from mailserver.servers.jmap.errors import MethodError, set_error
from mailserver.store import messages as msg
from mailserver.store import schema, submissions
from mailserver.store.accountlock import begin_change
from mailserver.store.directory import InvalidName, normalize_address

if TYPE_CHECKING:
    from mailserver.servers.jmap.service import JmapService

log = logging.getLogger("mailserver.jmap.submission")

ES = schema.email_submissions
PROPERTIES = ("id", "identityId", "emailId", "threadId", "envelope", "sendAt", "undoStatus",
              "deliveryStatus", "dsnBlobIds", "mdnBlobIds")


def _strip_subaddress(address: str) -> str:
    local, at, domain = address.partition("@")
    return local.split("+", 1)[0] + at + domain


def _without_bcc(raw: bytes) -> bytes:
    """The message without its Bcc: field(s) (RFC 8621 §7.5), body untouched."""
    end = raw.find(b"\r\n\r\n")
    end = len(raw) if end < 0 else end + 2
    out, skipping = [], False
    for line in raw[:end].split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            out.append(line)
    return b"\r\n".join(out) + b"\r\n" + raw[end:]


class Submissions:
    def __init__(self, service: "JmapService") -> None:
        self.s = service
        self.keys = signing.SigningKeyCache(service.directory)

    def register(self, core: JmapCore) -> None:
        core.register(SUBMISSION, "EmailSubmission/get", self.get)
        core.register(SUBMISSION, "EmailSubmission/set", self.set)
        core.register(SUBMISSION, "EmailSubmission/changes", self.changes)
        core.register(SUBMISSION, "EmailSubmission/query", self.query)
        core.register(SUBMISSION, "EmailSubmission/queryChanges", self.query_changes)

    def _obj(self, row: Any, props: list[str],
             queued: dict[int, dict[str, dict[str, str]]]) -> dict[str, Any]:
        full = {"id": f"s{row.id}", "identityId": row.identity_id,
                "emailId": ids.email_id(row.email_id), "threadId": ids.thread_id(row.thread_id),
                "envelope": json.loads(row.envelope), "sendAt": ev.utc_date(row.send_at),
                "undoStatus": row.undo_status,
                "deliveryStatus": _delivery_status(row, queued),
                "dsnBlobIds": [], "mdnBlobIds": []}
        return {p: full[p] for p in props}

    async def _state(self, account_id: int) -> str:
        from mailserver.servers.jmap import queries

        async with self.s.db.read() as conn:
            return ids.state(await queries.account_modseq(conn, account_id))

    async def get(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        want = string_list(args, "ids")
        props = string_list(args, "properties") or list(PROPERTIES)
        if [p for p in props if p not in PROPERTIES]:
            raise errors.invalid_arguments("unknown properties")
        if "id" not in props:
            props = ["id", *props]
        if want is not None and len(want) > self.s.limits.max_objects_in_get:
            raise MethodError("requestTooLarge")
        async with self.s.db.read() as conn:  # one snapshot: rows, queue state and state
            state = await queries.account_modseq(conn, call.account.id)
            q = select(ES).where(ES.c.account_id == call.account.id)
            if want is not None:
                wanted = [n for n in (_decode(call.resolve_id(i)) for i in want)
                          if n is not None]
                q = q.where(ES.c.id.in_(wanted))
            rows = (await conn.execute(q.order_by(ES.c.id))).all()
            queued = {}
            if "deliveryStatus" in props:
                queued = await submissions.queue_status(conn, [
                    r.queue_message_id for r in rows if r.queue_message_id is not None])
        by_id = {f"s{r.id}": r for r in rows}
        keys = list(by_id) if want is None else [call.resolve_id(i) for i in want]
        return {"accountId": call.account_id, "state": ids.state(state),
                "list": [self._obj(by_id[k], props, queued) for k in keys if k in by_id],
                "notFound": [k for k in keys if k not in by_id]}

    async def changes(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        return await self.s.mail._changes(call, args, "EmailSubmission", "s")

    # -- query ----------------------------------------------------------------------------------

    async def _query_ids(self, call: Call, args: dict[str, Any]) -> tuple[list[int], int]:
        """Every matching submission id in sort order, and the state it was read at."""
        flt = arg(args, "filter", dict)
        sort = arg(args, "sort", list)
        conds = [ES.c.account_id == call.account.id]
        if flt:
            conds.append(_filter(call, flt, 0))
        order = []
        for c in sort or []:
            if not isinstance(c, dict) or c.get("property") not in _SORT:
                raise MethodError("unsupportedSort", "sort by emailId, threadId or sentAt")
            asc = c.get("isAscending", True)
            if not isinstance(asc, bool):
                raise errors.invalid_arguments("isAscending must be a boolean")
            col = _SORT[c["property"]]
            order.append(col.asc() if asc else col.desc())
        order.append(ES.c.id.asc())
        async with self.s.db.read() as conn:
            state = await queries.account_modseq(conn, call.account.id)
            found = list((await conn.execute(select(ES.c.id).where(*conds).order_by(*order))
                          ).scalars())
        return found, state

    async def query(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        position = arg(args, "position", int, 0)
        anchor = arg(args, "anchor", str)
        anchor_offset = arg(args, "anchorOffset", int, 0)
        limit = arg(args, "limit", int)
        if limit is not None and limit < 0:
            raise errors.invalid_arguments("limit must not be negative")
        total_wanted = arg(args, "calculateTotal", bool, False)
        found, state = await self._query_ids(call, args)
        keys = [f"s{n}" for n in found]
        if anchor is not None:
            anchor = call.resolve_id(anchor)
            if anchor not in keys:
                raise MethodError("anchorNotFound")
            position = max(0, keys.index(anchor) + anchor_offset)
        elif position < 0:
            position = max(0, len(keys) + position)
        limit = MAX_QUERY_LIMIT if limit is None else min(limit, MAX_QUERY_LIMIT)
        page = keys[position:position + limit]
        out = {"accountId": call.account_id, "queryState": ids.state(state),
               "canCalculateChanges": True, "position": position, "ids": page}
        if total_wanted:
            out["total"] = len(keys)
        if limit == MAX_QUERY_LIMIT and len(keys) > position + limit:
            out["limit"] = limit
        return out

    async def query_changes(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        from mailserver.store import changes as changes_mod

        call.check_account(args)
        since = arg(args, "sinceQueryState", str)
        if since is None:
            raise errors.invalid_arguments("sinceQueryState is required")
        max_changes = unsigned(args, "maxChanges")
        if max_changes == 0:
            raise errors.invalid_arguments("maxChanges must be positive")
        up_to = arg(args, "upToId", str)
        total_wanted = arg(args, "calculateTotal", bool, False)
        modseq = ids.parse_state(since)
        if modseq is None:
            raise MethodError("cannotCalculateChanges", "unknown state")
        found, state = await self._query_ids(call, args)
        try:
            ch = await self.s.read(lambda conn: changes_mod.changes_since(
                conn, call.account.id, modseq, types=["EmailSubmission"]))
        except msg.CannotCalculateChanges:
            raise MethodError("cannotCalculateChanges",
                              "the state is older than the change log") from None
        oc = ch["EmailSubmission"]
        touched = [*oc.created, *oc.updated, *oc.destroyed]
        if max_changes is not None and len(touched) > max_changes:
            raise MethodError("tooManyChanges")
        index = {n: i for i, n in enumerate(found)}
        limit_index = index.get(_decode(call.resolve_id(up_to))) if up_to else None
        added = sorted(({"id": f"s{n}", "index": index[n]} for n in [*oc.created, *oc.updated]
                        if n in index and (limit_index is None or index[n] <= limit_index)),
                       key=lambda a: a["index"])
        out = {"accountId": call.account_id, "oldQueryState": since,
               "newQueryState": ids.state(max(state, ch.new_modseq)),
               "removed": [f"s{n}" for n in touched], "added": added}
        if total_wanted:
            out["total"] = len(found)
        return out

    async def set(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        create = arg(args, "create", dict, {})
        update = arg(args, "update", dict, {})
        destroy = string_list(args, "destroy") or []
        on_update = arg(args, "onSuccessUpdateEmail", dict)
        on_destroy = arg(args, "onSuccessDestroyEmail", list)
        if len(create) + len(update) + len(destroy) > self.s.limits.max_objects_in_set:
            raise MethodError("requestTooLarge")
        old = await self._state(call.account.id)
        created, not_created, updated, not_updated = {}, {}, {}, {}
        destroyed, not_destroyed = [], {}
        email_of: dict[str, str] = {}  # submission id → email id
        for cid, obj in create.items():
            try:
                sub_id, email_id, thread_id, send_at = await self._create(call, obj)
            except _Fail as f:
                not_created[cid] = f.error
                continue
            sid = f"s{sub_id}"
            call.created_ids[cid] = sid
            email_of[sid] = email_of[f"#{cid}"] = ids.email_id(email_id)
            created[cid] = {"id": sid, "threadId": ids.thread_id(thread_id),
                            "sendAt": ev.utc_date(send_at), "undoStatus": "final"}
        for key, patch in update.items():
            sid = _decode(call.resolve_id(key))
            exists = sid is not None and await self._exists(call.account.id, sid)
            if not exists:
                not_updated[key] = set_error("notFound")
            elif isinstance(patch, dict) and patch.get("undoStatus") == "canceled" \
                    and len(patch) == 1:
                not_updated[key] = set_error("cannotUnsend", "the message was already sent")
            else:
                not_updated[key] = set_error("invalidProperties",
                                             "only undoStatus can be changed")
        for key in destroy:
            sid = _decode(call.resolve_id(key))
            try:
                async with self.s.db.write() as conn:
                    cs = await begin_change(conn, call.account.id)  # the account lock first
                    res = await conn.execute(delete(ES).where(
                        ES.c.account_id == call.account.id, ES.c.id == (sid or -1)))
                    if not res.rowcount:
                        raise _Fail(set_error("notFound"))  # rolls the state bump back
                    cs.record("EmailSubmission", sid, "d")
                    await cs.flush(conn)
                destroyed.append(key)
            except _Fail as f:
                not_destroyed[key] = f.error
        result = {"accountId": call.account_id, "oldState": old,
                  "newState": await self._state(call.account.id),
                  "created": created or None, "updated": updated or None,
                  "destroyed": destroyed or None, "notCreated": not_created or None,
                  "notUpdated": not_updated or None, "notDestroyed": not_destroyed or None}
        # §7.5: the implicit Email/set for the submissions that succeeded
        email_update = {email_of[k]: v for k, v in (on_update or {}).items() if k in email_of}
        email_destroy = [email_of[k] for k in (on_destroy or []) if k in email_of]
        if email_update or email_destroy:
            set_args: dict[str, Any] = {"accountId": call.account_id}
            if email_update:
                set_args["update"] = email_update
            if email_destroy:
                set_args["destroy"] = email_destroy
            email_result = await self.s.mail.email_set(call, set_args)
            call.extra_responses.append(["Email/set", email_result, call.call_id])
        return result

    async def _exists(self, account_id: int, sid: int) -> bool:
        async with self.s.db.read() as conn:
            return (await conn.execute(select(ES.c.id).where(
                ES.c.account_id == account_id, ES.c.id == sid))).first() is not None

    async def _create(self, call: Call, obj: Any) -> tuple[int, int, int, int]:
        from mailserver.queue import store as q

        if not isinstance(obj, dict):
            raise _Fail(set_error("invalidProperties"))
        bad = [k for k in obj if k not in ("identityId", "emailId", "envelope")]
        if bad:
            raise _Fail(set_error("invalidProperties", properties=bad))
        account = call.account
        identity_id = call.resolve_id(obj.get("identityId"))
        if await self.s.identities.identity(account, identity_id) is None:
            raise _Fail(set_error("invalidProperties", "no such identity",
                                  properties=["identityId"]))
        email_id = ids.decode("e", call.resolve_id(obj.get("emailId")))
        found = {} if email_id is None else await self.s.read(
            lambda conn: msg.get_emails(conn, account.id, [email_id]))
        e = found.get(email_id) if email_id is not None else None
        if e is None:
            raise _Fail(set_error("invalidProperties", "no such email", properties=["emailId"]))
        try:
            raw = await self.s.blobs.get(e.blob_id)
        except LookupError:
            raise _Fail(set_error("invalidProperties", "the email's content is gone",
                                  properties=["emailId"])) from None
        header_end = raw.find(b"\r\n\r\n")
        fields = split_header_fields(raw[:header_end + 2 if header_end >= 0 else len(raw)])
        senders = [a.email for n, v in fields if n == "from"
                   for a in parse_addresses(header_text(v)) if a.email]
        mail_from, rcpts = self._envelope(obj.get("envelope"), e, fields, senders)
        owned = {a.lower() for a in await self.s.directory.addresses_of(account.id)}

        def own(address: str) -> bool:
            try:
                address = normalize_address(address)
            except ValueError:  # InvalidName
                return False
            return address.lower() in owned or _strip_subaddress(address).lower() in owned
        if not senders or not all(own(a) for a in senders):
            raise _Fail(set_error("forbiddenFrom", "the From: address is not yours"))
        if not own(mail_from):
            raise _Fail(set_error("forbiddenMailFrom", "the envelope sender is not yours"))
        out = _without_bcc(raw)
        try:
            out = await signing.sign_message(out, senders[0].rpartition("@")[2], self.keys)
        except Exception:  # noqa: BLE001 - sending unsigned beats not sending (as SMTP does)
            log.warning("DKIM signing failed; sending unsigned", exc_info=True)
        local, remote = [], []
        for r in rcpts:
            domain = r.rpartition("@")[2]
            (local if await self.s.directory.is_hosted_domain(domain) else remote).append(r)
        blob_id = await self.s.blobs.put(out)  # durable before anything refers to it
        now = int(time.time())
        status: dict[str, Any] = {}
        to_queue = list(remote)
        if local:
            # RFC 5321 §4.4: we are the final delivery of local recipients
            trace = f"Return-Path: <{mail_from}>\r\n".encode("utf-8", "surrogateescape")
            result = await self.s.deliverer.deliver(trace + out, local)
            for r in local:
                o = result[r]
                if o.ok:
                    status[r] = {"smtpReply": "250 2.0.0 delivered", "delivered": "yes",
                                 "displayed": "unknown"}
                elif o.permanent:
                    status[r] = {"smtpReply": "550 5.1.1 no such user", "delivered": "no",
                                 "displayed": "unknown"}
                else:  # temporary (quota, a failed transaction): the queue retries it
                    to_queue.append(r)
        for r in to_queue:
            status[r] = {"smtpReply": "250 2.0.0 queued", "delivered": "queued",
                         "displayed": "unknown"}
        envelope = {"mailFrom": {"email": mail_from, "parameters": None},
                    "rcptTo": [{"email": r, "parameters": None} for r in rcpts]}
        # the queue rows and the submission record commit together
        async with self.s.db.write() as conn:
            cs = await begin_change(conn, account.id)
            queue_id = None
            if to_queue:
                queue_id = await q.enqueue(conn, blob_id=blob_id, size=len(out),
                                           sender=mail_from, recipients=to_queue, now=now,
                                           account_id=account.id)
            last = (await conn.execute(select(func.max(ES.c.id)).where(
                ES.c.account_id == account.id))).scalar()
            sub_id = (last or 0) + 1
            cs.record("EmailSubmission", sub_id, "c")
            await cs.flush(conn)
            await conn.execute(insert(ES).values(
                account_id=account.id, id=sub_id, identity_id=identity_id,
                email_id=e.id, thread_id=e.thread_id, envelope=json.dumps(envelope),
                send_at=now, undo_status="final", delivery_status=json.dumps(status),
                queue_message_id=queue_id))
        log.info("submitted %d octets, %d local, %d remote", len(out), len(local), len(remote),
                 extra={"event": "submission", "user": account.login})
        return sub_id, e.id, e.thread_id, now

    @staticmethod
    def _envelope(value: Any, e: msg.Email, fields, senders) -> tuple[str, list[str]]:
        if value is not None:
            if (not isinstance(value, dict) or not isinstance(value.get("mailFrom"), dict)
                    or not isinstance(value.get("rcptTo"), list)):
                raise _Fail(set_error("invalidProperties", properties=["envelope"]))
            mail_from = value["mailFrom"].get("email")
            rcpts = [r.get("email") if isinstance(r, dict) else None for r in value["rcptTo"]]
            if not isinstance(mail_from, str):
                raise _Fail(set_error("invalidProperties", properties=["envelope"]))
        else:
            sender = [a.email for n, v in fields if n == "sender"
                      for a in parse_addresses(header_text(v)) if a.email]
            mail_from = (sender or senders or [""])[0]
            rcpts = [a["email"] for field in (e.to, e.cc, e.bcc) for a in field if a["email"]]
        if not rcpts:
            raise _Fail(set_error("noRecipients"))
        bad = []
        clean: list[str] = []
        for r in rcpts:
            try:
                if not isinstance(r, str):
                    raise InvalidName(str(r))
                address = normalize_address(r)
            except ValueError:  # InvalidName
                bad.append(r)
                continue
            if address not in clean:
                clean.append(address)
        if bad:
            raise _Fail(set_error("invalidRecipients", invalidRecipients=bad))
        return mail_from, clean


class _Fail(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["type"])
        self.error = error


_SORT = {"emailId": ES.c.email_id, "threadId": ES.c.thread_id, "sentAt": ES.c.send_at}
MAX_QUERY_LIMIT = 1000


def _filter(call: Call, flt: Any, depth: int) -> Any:
    """A FilterOperator or FilterCondition (RFC 8620 §5.5, RFC 8621 §7.3) as SQL."""
    if not isinstance(flt, dict) or depth > 10:
        raise errors.invalid_arguments("a filter must be an object (nested at most 10 deep)")
    if "operator" in flt:
        op, subs = flt.get("operator"), flt.get("conditions")
        if op not in ("AND", "OR", "NOT") or not isinstance(subs, list) or set(flt) - {
                "operator", "conditions"}:
            raise errors.invalid_arguments("a FilterOperator needs operator and conditions")
        parts = [_filter(call, c, depth + 1) for c in subs]
        if op == "AND":
            return and_(true(), *parts)
        if op == "OR":
            return or_(false(), *parts)
        return not_(or_(false(), *parts))
    conds = []
    for key, value in flt.items():
        if key in ("identityIds", "emailIds", "threadIds"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise errors.invalid_arguments(f"filter {key} must be an array of ids")
            value = [call.resolve_id(v) for v in value]
            if key == "identityIds":
                conds.append(ES.c.identity_id.in_(value))
            else:
                prefix, col = ("e", ES.c.email_id) if key == "emailIds" else ("t", ES.c.thread_id)
                conds.append(col.in_([n for n in (ids.decode(prefix, v) for v in value)
                                      if n is not None]))
        elif key == "undoStatus":
            if value not in ("pending", "final", "canceled"):
                raise errors.invalid_arguments("filter undoStatus is not a valid status")
            conds.append(ES.c.undo_status == value)
        elif key in ("before", "after"):
            t = ev.parse_utc_date(value)
            if t is None:
                raise errors.invalid_arguments(f"filter {key} must be a UTCDate")
            conds.append(ES.c.send_at < t if key == "before" else ES.c.send_at >= t)
        else:
            raise MethodError("unsupportedFilter", f"unknown filter property {key!r}")
    return and_(true(), *conds)


def _delivery_status(row: Any, queued: dict[int, dict[str, dict[str, str]]]
                     ) -> dict[str, Any]:
    """The recorded status, with remote recipients still "queued" read from the queue."""
    status = json.loads(row.delivery_status)
    waiting = queued.get(row.queue_message_id, {}) if row.queue_message_id is not None else {}
    for rcpt, st in status.items():
        if st.get("delivered") == "queued" and row.queue_message_id is not None:
            status[rcpt] = waiting.get(rcpt.lower(), {
                "smtpReply": st.get("smtpReply", ""), "delivered": "unknown",
                "displayed": "unknown"})
    return status


def _decode(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("s") and value[1:].isdigit() \
            and len(value) < 20:
        return int(value[1:])
    return None
