"""VacationResponse (RFC 8621 §8): the account's one auto-reply setting, id "singleton".

The replies themselves are sent by ``mailserver.autoreply`` after each delivery; this module
only reads and writes the ``vacation_responses`` row (no row = the disabled default).

Decisions:

- /get and /set only (§8 defines no /changes); the state is the account MODSEQ like every
  other type, and every /set bumps it with a ``VacationResponse`` change-log row.
- The singleton cannot be created or destroyed (``singleton`` SetError, §8).
- Any update clears the "already replied" records (``vacation_replies``), so a new absence
  answers people who were answered during the previous one (like a new RFC 5230 ``:handle``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update

from mailserver.servers.jmap import emailview as ev
from mailserver.servers.jmap import errors, ids, queries
from mailserver.servers.jmap.core import VACATION, Call, JmapCore, arg, string_list
from mailserver.servers.jmap.errors import MethodError, set_error
from mailserver.store import schema
from mailserver.store.accountlock import begin_change

log = logging.getLogger("mailserver.jmap")

if TYPE_CHECKING:
    from mailserver.servers.jmap.service import JmapService

V = schema.vacation_responses
VR = schema.vacation_replies
SINGLETON = "singleton"
PROPERTIES = ("id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody")
_COLUMNS = {"isEnabled": "is_enabled", "fromDate": "from_date", "toDate": "to_date",
            "subject": "subject", "textBody": "text_body", "htmlBody": "html_body"}


class VacationMethods:
    def __init__(self, service: JmapService) -> None:
        self.s = service

    def register(self, core: JmapCore) -> None:
        core.register(VACATION, "VacationResponse/get", self.get)
        core.register(VACATION, "VacationResponse/set", self.set)

    @staticmethod
    def _obj(row: Any) -> dict[str, Any]:
        if row is None:
            return {"id": SINGLETON, "isEnabled": False, "fromDate": None, "toDate": None,
                    "subject": None, "textBody": None, "htmlBody": None}
        return {"id": SINGLETON, "isEnabled": bool(row.is_enabled),
                "fromDate": ev.utc_date(row.from_date), "toDate": ev.utc_date(row.to_date),
                "subject": row.subject, "textBody": row.text_body, "htmlBody": row.html_body}

    async def get(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        want = string_list(args, "ids")
        props = string_list(args, "properties")
        if props is not None and [p for p in props if p not in PROPERTIES]:
            raise errors.invalid_arguments("unknown properties")
        async with self.s.db.read() as conn:
            state = await queries.account_modseq(conn, call.account.id)
            row = (await conn.execute(select(V).where(V.c.account_id == call.account.id))
                   ).first()
        obj = self._obj(row)
        if props is not None:
            obj = {k: v for k, v in obj.items() if k in props or k == "id"}
        keys = [SINGLETON] if want is None else [call.resolve_id(i) for i in want]
        return {"accountId": call.account_id, "state": ids.state(state),
                "list": [obj for k in keys if k == SINGLETON][:1],
                "notFound": [k for k in keys if k != SINGLETON]}

    async def set(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        create = arg(args, "create", dict, {})
        update_ = arg(args, "update", dict, {})
        destroy = string_list(args, "destroy") or []
        if_in_state = arg(args, "ifInState", str)
        account_id = call.account.id
        async with self.s.db.read() as conn:
            old = await queries.account_modseq(conn, account_id)
        if if_in_state is not None and if_in_state != ids.state(old):
            raise MethodError("stateMismatch")
        not_created = {cid: set_error("singleton", "the VacationResponse always exists")
                       for cid in create}
        not_destroyed = {k: set_error("singleton", "the VacationResponse cannot be destroyed")
                         for k in destroy}
        updated, not_updated = {}, {}
        new = old
        for key, patch in update_.items():
            if call.resolve_id(key) != SINGLETON:
                not_updated[key] = set_error("notFound")
                continue
            try:
                values = _values(patch)
            except _Invalid as e:
                not_updated[key] = set_error("invalidProperties", e.description,
                                             properties=e.properties)
                continue
            new = await self._write(account_id, values)
            updated[key] = None
        return {"accountId": call.account_id, "oldState": ids.state(old),
                "newState": ids.state(new), "created": None, "updated": updated or None,
                "destroyed": None, "notCreated": not_created or None,
                "notUpdated": not_updated or None, "notDestroyed": not_destroyed or None}

    async def _write(self, account_id: int, values: dict[str, Any]) -> int:
        async with self.s.db.write() as conn:
            cs = await begin_change(conn, account_id)
            cs.record("VacationResponse", 0, "u")
            await cs.flush(conn)
            exists = (await conn.execute(select(V.c.account_id).where(
                V.c.account_id == account_id))).first() is not None
            if exists:
                if values:
                    await conn.execute(update(V).where(V.c.account_id == account_id)
                                       .values(**values))
            else:
                await conn.execute(insert(V).values(account_id=account_id, **values))
            await conn.execute(delete(VR).where(VR.c.account_id == account_id))
        from mailserver.events import ChangeEvent

        try:
            await self.s.bus.publish(ChangeEvent(account_id, cs.modseq,
                                                 frozenset({"VacationResponse"})))
        except Exception:
            log.debug("change bus publish failed", exc_info=True)
        responder = getattr(self.s.deliverer, "auto_responder", None)
        if responder is not None:
            responder.invalidate()
        return cs.modseq


class _Invalid(Exception):
    def __init__(self, description: str, properties: list[str]) -> None:
        super().__init__(description)
        self.description, self.properties = description, properties


def _values(patch: Any) -> dict[str, Any]:
    """The column values of a VacationResponse patch (§8.1), or _Invalid."""
    if not isinstance(patch, dict):
        raise _Invalid("the patch must be an object", [])
    out: dict[str, Any] = {}
    bad: list[str] = []
    for key, value in patch.items():
        if key == "id":
            if value != SINGLETON:
                bad.append(key)
        elif key == "isEnabled":
            if not isinstance(value, bool):
                bad.append(key)
            else:
                out["is_enabled"] = value
        elif key in ("fromDate", "toDate"):
            if value is None:
                out[_COLUMNS[key]] = None
            else:
                t = ev.parse_utc_date(value)
                if t is None:
                    bad.append(key)
                else:
                    out[_COLUMNS[key]] = t
        elif key in ("subject", "textBody", "htmlBody"):
            if value is not None and (not isinstance(value, str) or len(value) > 1_000_000):
                bad.append(key)
            else:
                out[_COLUMNS[key]] = value
        else:
            bad.append(key)
    if bad:
        raise _Invalid("invalid or unknown properties", bad)
    return out
