"""Identity (RFC 8621 §6): get, changes, set, backed by the ``identities`` table.

Decisions:

- **Default identities.** Every address the account owns (its login and the aliases that reach
  it, ``Directory.addresses_of``) has one identity with ``mayDelete: false``; they are kept in
  step with the directory whenever the account's identities are read (``sync``), so an alias
  added by the operator shows up as a created Identity in Identity/changes and a removed one
  as destroyed. They can be edited (name, replyTo, bcc, signatures), not destroyed
  (``forbidden``). The login's default identity has the id ``i<account id>`` (what earlier
  versions and the REST facade use); every other identity gets the next free number.
- **Created identities** must use an address the account owns (a ``+tag`` sub-address of one
  is fine), else ``forbiddenFrom`` (§6.3); ``email`` is immutable afterwards.
- State strings are the account MODSEQ; every write records ``Identity`` change-log rows, so
  Identity/changes is exact (and ``cannotCalculateChanges`` only below the log's floor).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update

from mailserver.events import ChangeEvent
from mailserver.servers.jmap import errors, ids, queries
from mailserver.servers.jmap.core import SUBMISSION, Call, JmapCore, arg, string_list
from mailserver.servers.jmap.errors import MethodError, set_error
from mailserver.store import schema
from mailserver.store.accountlock import begin_change
from mailserver.store.directory import normalize_address

log = logging.getLogger("mailserver.jmap")

if TYPE_CHECKING:
    from mailserver.servers.jmap.service import JmapService

I = schema.identities
PROPERTIES = ("id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature",
              "mayDelete")
_TEXT = {"name": "name", "textSignature": "text_signature", "htmlSignature": "html_signature"}
_ADDRS = {"replyTo": "reply_to", "bcc": "bcc"}
MAX_TEXT = 100_000


def _strip_tag(address: str) -> str:
    local, at, domain = address.partition("@")
    return local.split("+", 1)[0] + at + domain


class Identities:
    def __init__(self, service: JmapService) -> None:
        self.s = service

    def register(self, core: JmapCore) -> None:
        core.register(SUBMISSION, "Identity/get", self.get)
        core.register(SUBMISSION, "Identity/changes", self.changes)
        core.register(SUBMISSION, "Identity/set", self.set)

    # -- the default identities ---------------------------------------------------------------

    async def sync(self, account: Any) -> None:
        """Create/destroy the default identities so that there is one per owned address."""
        owned = {a.lower() for a in await self.s.directory.addresses_of(account.id)}
        async with self.s.db.read() as conn:
            have = set((await conn.execute(select(I.c.email).where(
                I.c.account_id == account.id, I.c.may_delete.is_(False)))).scalars())
        if have == owned:
            return
        async with self.s.db.write() as conn:
            cs = await begin_change(conn, account.id)
            rows = (await conn.execute(select(I.c.id, I.c.email, I.c.may_delete).where(
                I.c.account_id == account.id))).all()
            defaults = {r.email: r.id for r in rows if not r.may_delete}
            used = {r.id for r in rows}
            next_id = max([*used, account.id]) + 1
            for address in sorted(owned - set(defaults), key=lambda a: a != account.login):
                if address == account.login and account.id not in used:
                    new_id = account.id
                else:
                    new_id, next_id = next_id, next_id + 1
                used.add(new_id)
                await conn.execute(insert(I).values(
                    account_id=account.id, id=new_id, email=address,
                    name=account.display_name or "", may_delete=False))
                cs.record("Identity", new_id, "c")
            for address, iid in defaults.items():
                if address not in owned:
                    await conn.execute(delete(I).where(I.c.account_id == account.id,
                                                       I.c.id == iid))
                    cs.record("Identity", iid, "d")
            await cs.flush(conn)
        await self._publish(account.id, cs.modseq)

    async def _publish(self, account_id: int, modseq: int) -> None:
        try:
            await self.s.bus.publish(ChangeEvent(account_id, modseq, frozenset({"Identity"})))
        except Exception:
            log.debug("change bus publish failed", exc_info=True)

    async def identity(self, account: Any, identity_id: Any) -> Any | None:
        """The row of ``identity_id`` ("i<n>") of the account, or None (EmailSubmission)."""
        n = ids.decode("i", identity_id)
        if n is None:
            return None
        await self.sync(account)
        async with self.s.db.read() as conn:
            return (await conn.execute(select(I).where(I.c.account_id == account.id,
                                                       I.c.id == n))).first()

    # -- methods ------------------------------------------------------------------------------

    @staticmethod
    def _obj(row: Any) -> dict[str, Any]:
        return {"id": f"i{row.id}", "name": row.name, "email": row.email,
                "replyTo": json.loads(row.reply_to) if row.reply_to else None,
                "bcc": json.loads(row.bcc) if row.bcc else None,
                "textSignature": row.text_signature, "htmlSignature": row.html_signature,
                "mayDelete": bool(row.may_delete)}

    async def get(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        want = string_list(args, "ids")
        if want is not None and len(want) > self.s.limits.max_objects_in_get:
            raise MethodError("requestTooLarge")
        props = string_list(args, "properties")
        if props is not None and [p for p in props if p not in PROPERTIES]:
            raise errors.invalid_arguments("unknown properties")
        await self.sync(call.account)
        async with self.s.db.read() as conn:
            state = await queries.account_modseq(conn, call.account.id)
            rows = (await conn.execute(select(I).where(I.c.account_id == call.account.id)
                                       .order_by(I.c.id))).all()
        by_id = {f"i{r.id}": self._obj(r) for r in rows}
        keys = list(by_id) if want is None else [call.resolve_id(k) for k in want]
        out = []
        for k in keys:
            if k in by_id:
                obj = by_id[k]
                out.append(obj if props is None else
                           {p: v for p, v in obj.items() if p in props or p == "id"})
        return {"accountId": call.account_id, "state": ids.state(state), "list": out,
                "notFound": [k for k in keys if k not in by_id]}

    async def changes(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        await self.sync(call.account)
        return await self.s.mail._changes(call, args, "Identity", "i")

    async def set(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        create = arg(args, "create", dict, {})
        update_ = arg(args, "update", dict, {})
        destroy = string_list(args, "destroy") or []
        if len(create) + len(update_) + len(destroy) > self.s.limits.max_objects_in_set:
            raise MethodError("requestTooLarge")
        if_in_state = arg(args, "ifInState", str)
        account = call.account
        await self.sync(account)
        owned = {a.lower() for a in await self.s.directory.addresses_of(account.id)}
        created, not_created, updated, not_updated = {}, {}, {}, {}
        destroyed, not_destroyed = [], {}
        async with self.s.db.write() as conn:
            cs = await begin_change(conn, account.id)
            old = cs.modseq - 1
            if if_in_state is not None and if_in_state != ids.state(old):
                raise MethodError("stateMismatch")  # rolls back: nothing was written
            rows = {r.id: r for r in (await conn.execute(
                select(I).where(I.c.account_id == account.id))).all()}
            next_id = max([*rows, account.id]) + 1
            for cid, obj in create.items():
                try:
                    values = _create_values(obj, owned)
                except _Fail as f:
                    not_created[cid] = f.error
                    continue
                await conn.execute(insert(I).values(account_id=account.id, id=next_id,
                                                    may_delete=True, **values))
                cs.record("Identity", next_id, "c")
                call.created_ids[cid] = f"i{next_id}"
                # the whole object (§5.3 asks for at least the server-set and defaulted
                # properties; clients such as jmapc parse it as a complete Identity)
                created[cid] = {"id": f"i{next_id}", **_defaults(), **{
                    k: obj[k] for k in ("name", "textSignature", "htmlSignature")
                    if k in obj}, "email": values["email"],
                    "replyTo": json.loads(values["reply_to"]) if values.get("reply_to")
                    else None,
                    "bcc": json.loads(values["bcc"]) if values.get("bcc") else None,
                    "mayDelete": True}
                rows[next_id] = None
                next_id += 1
            for key, patch in update_.items():
                n = ids.decode("i", call.resolve_id(key))
                row = rows.get(n) if n is not None else None
                if row is None:
                    not_updated[key] = set_error("notFound")
                    continue
                try:
                    values = _update_values(patch, row)
                except _Fail as f:
                    not_updated[key] = f.error
                    continue
                if values:
                    await conn.execute(update(I).where(I.c.account_id == account.id,
                                                       I.c.id == n).values(**values))
                    cs.record("Identity", n, "u")
                updated[key] = None
            for key in destroy:
                n = ids.decode("i", call.resolve_id(key)) if isinstance(key, str) else None
                row = rows.get(n) if n is not None else None
                if n is None or n not in rows:
                    not_destroyed[key] = set_error("notFound")
                    continue
                if row is not None and not row.may_delete:
                    not_destroyed[key] = set_error(
                        "forbidden", "the default identity of an address cannot be deleted")
                    continue
                await conn.execute(delete(I).where(I.c.account_id == account.id, I.c.id == n))
                cs.record("Identity", n, "d")
                del rows[n]
                destroyed.append(key)
            await cs.flush(conn)
        await self._publish(account.id, cs.modseq)
        return {"accountId": call.account_id, "oldState": ids.state(old),
                "newState": ids.state(cs.modseq), "created": created or None,
                "updated": updated or None, "destroyed": destroyed or None,
                "notCreated": not_created or None, "notUpdated": not_updated or None,
                "notDestroyed": not_destroyed or None}


class _Fail(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["type"])
        self.error = error


def _defaults() -> dict[str, Any]:
    return {"name": "", "replyTo": None, "bcc": None, "textSignature": "", "htmlSignature": ""}


def _addresses(value: Any) -> str | None:
    """EmailAddress[]|null (§4.1.2.3) as stored JSON; ValueError when malformed."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 100:
        raise ValueError
    out = []
    for a in value:
        if not isinstance(a, dict) or set(a) - {"name", "email"} \
                or not isinstance(a.get("email"), str) \
                or not isinstance(a.get("name"), (str, type(None))):
            raise ValueError
        try:
            email = normalize_address(a["email"])
        except ValueError:  # InvalidName
            raise ValueError from None
        out.append({"name": a.get("name"), "email": email})
    return json.dumps(out)


def _common_values(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    bad: list[str] = []
    for key, value in obj.items():
        if key in _TEXT:
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                bad.append(key)
            else:
                values[_TEXT[key]] = value
        elif key in _ADDRS:
            try:
                values[_ADDRS[key]] = _addresses(value)
            except ValueError:
                bad.append(key)
    return values, bad


def _create_values(obj: Any, owned: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Fail(set_error("invalidProperties", "an Identity must be an object"))
    values, bad = _common_values(obj)
    bad += [k for k in obj if k not in PROPERTIES or k in ("id", "mayDelete")]
    email = obj.get("email")
    if not isinstance(email, str):
        bad.append("email")
    if bad:
        raise _Fail(set_error("invalidProperties", properties=sorted(set(bad))))
    try:
        address = normalize_address(email)
    except ValueError:  # InvalidName
        raise _Fail(set_error("invalidProperties", "not an email address",
                              properties=["email"])) from None
    if address.lower() not in owned and _strip_tag(address).lower() not in owned:
        raise _Fail(set_error("forbiddenFrom", "you may not send from this address"))
    return {"email": address, **values}


def _update_values(patch: Any, row: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise _Fail(set_error("invalidProperties", "the patch must be an object"))
    values, bad = _common_values(patch)
    for key, value in patch.items():
        if key == "id" and value != f"i{row.id}":
            bad.append(key)
        elif key == "email" and value != row.email:
            bad.append(key)  # immutable (§6)
        elif key == "mayDelete" and value != bool(row.may_delete) or key not in PROPERTIES:
            bad.append(key)
    if bad:
        raise _Fail(set_error("invalidProperties", properties=sorted(set(bad))))
    return values

