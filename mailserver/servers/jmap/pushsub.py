"""PushSubscription (RFC 8620 §7.2): PushSubscription/get and /set, verification, delivery.

- Creating a subscription stores it unverified and POSTs a ``PushVerification`` object to its
  URL; the client proves it received it by setting ``verificationCode`` with /set update. Only
  verified, unexpired subscriptions receive ``StateChange`` POSTs.
- Delivery: one watcher task per account that has verified subscriptions, subscribed to the
  change bus (cross-process), POSTing each change to every matching subscription (10 s timeout,
  failures logged, never retried: the client catches up with /changes). With several JMAP
  processes every process pushes (duplicates are harmless for clients; a per-subscription lease
  would make it exactly one — not done).
- ``url`` must be https, except http to a loopback address (local tools and tests). With
  ``keys`` (``p256dh`` + ``auth``) every POST body is encrypted per RFC 8291 (``webpush``);
  keys that are not a P-256 point and a 16-byte secret are refused with invalidProperties.
- ``expires`` is capped at ``MAX_LIFETIME`` (7 days); the server-set value is returned.
- ``url`` and ``keys`` are write-only (§7.2: never returned by /get).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import secrets
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import delete, func, insert, select, update

from mailserver.servers.jmap import errors, webpush
from mailserver.servers.jmap import emailview as ev
from mailserver.servers.jmap.core import CORE, Call, JmapCore, arg, string_list
from mailserver.servers.jmap.errors import MethodError, set_error
from mailserver.store import schema

if TYPE_CHECKING:
    from mailserver.servers.jmap.service import JmapService

log = logging.getLogger("mailserver.jmap.push")

PS = schema.push_subscriptions
MAX_LIFETIME = 7 * 86400
POST_TIMEOUT = 10.0
PROPERTIES = ("id", "deviceClientId", "verificationCode", "expires", "types")


def _url_ok(url: Any) -> bool:
    if not isinstance(url, str) or len(url) > 2000:
        return False
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https" and u.hostname:
        return True
    if u.scheme == "http" and u.hostname:
        if u.hostname == "localhost":
            return True
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(u.hostname).is_loopback
    return False


class PushSubscriptions:
    def __init__(self, service: "JmapService") -> None:
        self.s = service
        self._watchers: dict[int, asyncio.Task] = {}
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def register(self, core: JmapCore) -> None:
        core.register(CORE, "PushSubscription/get", self.get)
        core.register(CORE, "PushSubscription/set", self.set)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        now = int(time.time())
        async with self.s.db.read() as conn:
            accounts = (await conn.execute(select(PS.c.account_id).distinct().where(
                PS.c.verified.is_(True), PS.c.expires_at > now))).scalars().all()
        for account_id in accounts:
            self._watch(account_id)

    async def close(self) -> None:
        for t in [*self._watchers.values(), *self._tasks]:
            t.cancel()
        for t in [*self._watchers.values(), *self._tasks]:
            with contextlib.suppress(BaseException):
                await t
        self._watchers.clear()
        if self._http is not None:
            await self._http.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT))
        return self._http

    async def _post(self, url: str, body: dict[str, Any], keys: str | None = None) -> None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "TTL": "86400"}
        if keys:  # RFC 8291: only the client can read it
            public, auth = webpush.parse_keys(json.loads(keys))
            data = webpush.encrypt(data, public, auth)
            headers = {"Content-Type": "application/octet-stream",
                       "Content-Encoding": "aes128gcm", "TTL": "86400"}
        try:
            async with self._client().post(url, data=data, headers=headers) as r:
                if r.status >= 300:
                    log.info("push to %s answered %s", urllib.parse.urlsplit(url).hostname,
                             r.status, extra={"event": "push_failed"})
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            log.info("push to %s failed: %s", urllib.parse.urlsplit(url).hostname, e,
                     extra={"event": "push_failed"})

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch(self, account_id: int) -> None:
        task = self._watchers.get(account_id)
        if task is None or task.done():
            task = self._watchers[account_id] = asyncio.create_task(self._watcher(account_id))
            task.add_done_callback(self._watcher_done)

    def _watcher_done(self, task: asyncio.Task) -> None:
        # a watcher that died of an error would silently end pushes for the account: log it
        # (the next PushSubscription/set or daemon start watches the account again)
        if not task.cancelled() and task.exception() is not None:
            log.error("push watcher failed", exc_info=task.exception())

    async def _watcher(self, account_id: int) -> None:
        async with self.s.bus.subscribe(account_id) as events:
            async for event in events:
                now = int(time.time())
                async with self.s.db.read() as conn:
                    # PS.c["keys"]: PS.c.keys is ColumnCollection.keys()
                    cols = (PS.c.url, PS.c.types, PS.c["keys"])
                    rows = (await conn.execute(select(*cols).where(
                        PS.c.account_id == account_id, PS.c.verified.is_(True),
                        PS.c.expires_at > now))).all()
                if not rows:
                    self._watchers.pop(account_id, None)
                    return
                for url, types, keys in rows:
                    wanted = None if types is None else set(json.loads(types))
                    change = self.s.state_change_for(account_id, event, wanted)
                    if change is not None:
                        self._spawn(self._post(url, change, keys))

    # -- methods ----------------------------------------------------------------------------

    @staticmethod
    def _obj(row: Any, props: list[str]) -> dict[str, Any]:
        full = {"id": f"p{row.id}", "deviceClientId": row.device_client_id,
                "verificationCode": row.verification_code if row.verified else None,
                "expires": ev.utc_date(row.expires_at),
                "types": None if row.types is None else json.loads(row.types)}
        return {p: full[p] for p in props}

    async def get(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        if "accountId" in args:
            raise errors.invalid_arguments("PushSubscription/get takes no accountId")
        want = string_list(args, "ids")
        props = string_list(args, "properties") or list(PROPERTIES)
        bad = [p for p in props if p not in PROPERTIES]
        if bad:
            raise errors.invalid_arguments(f"unknown properties {bad}")
        if "id" not in props:
            props = ["id", *props]
        async with self.s.db.read() as conn:
            rows = (await conn.execute(select(PS).where(
                PS.c.account_id == call.account.id).order_by(PS.c.id))).all()
        by_id = {f"p{r.id}": r for r in rows}
        keys = list(by_id) if want is None else [call.resolve_id(i) for i in want]
        return {"list": [self._obj(by_id[k], props) for k in keys if k in by_id],
                "notFound": [k for k in keys if k not in by_id]}

    async def set(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        if "accountId" in args:
            raise errors.invalid_arguments("PushSubscription/set takes no accountId")
        create = arg(args, "create", dict, {})
        update_ = arg(args, "update", dict, {})
        destroy = arg(args, "destroy", list, [])
        if len(create) + len(update_) + len(destroy) > self.s.limits.max_objects_in_set:
            raise MethodError("requestTooLarge")
        created, not_created, updated, not_updated = {}, {}, {}, {}
        destroyed, not_destroyed = [], {}
        now = int(time.time())
        verifications = []
        for cid, obj in create.items():
            if not isinstance(obj, dict):
                not_created[cid] = set_error("invalidProperties")
                continue
            bad = [k for k in obj if k not in ("deviceClientId", "url", "keys", "expires",
                                               "types")]
            if not isinstance(obj.get("deviceClientId"), str) or not obj["deviceClientId"]:
                bad.append("deviceClientId")
            if not _url_ok(obj.get("url")):
                bad.append("url")
            keys = obj.get("keys")
            if keys is not None:
                try:
                    webpush.parse_keys(keys)
                except webpush.KeyError_:
                    bad.append("keys")
            types = obj.get("types")
            if types is not None and (not isinstance(types, list)
                                      or not all(isinstance(t, str) for t in types)):
                bad.append("types")
            expires = now + MAX_LIFETIME
            if obj.get("expires") is not None:
                t = ev.parse_utc_date(obj["expires"])
                if t is None:
                    bad.append("expires")
                else:
                    expires = min(max(t, now), now + MAX_LIFETIME)
            if bad:
                not_created[cid] = set_error(
                    "invalidProperties", "keys must be a P-256 public key (p256dh) and a "
                    "16-byte secret (auth), base64url" if "keys" in bad else None,
                    properties=sorted(set(bad)))
                continue
            code = secrets.token_urlsafe(24)
            async with self.s.db.write() as conn:
                last = (await conn.execute(select(func.max(PS.c.id)).where(
                    PS.c.account_id == call.account.id))).scalar()
                new_id = (last or 0) + 1
                await conn.execute(insert(PS).values(
                    account_id=call.account.id, id=new_id,
                    device_client_id=obj["deviceClientId"], url=obj["url"],
                    verification_code=code, verified=False, expires_at=expires,
                    types=None if types is None else json.dumps(types), created_at=now,
                    keys=None if keys is None else json.dumps(keys)))
            sid = f"p{new_id}"
            call.created_ids[cid] = sid
            created[cid] = {"id": sid, "keys": None, "expires": ev.utc_date(expires)}
            verifications.append((obj["url"], {"@type": "PushVerification",
                                               "pushSubscriptionId": sid,
                                               "verificationCode": code},
                                  None if keys is None else json.dumps(keys)))
        for key, patch in update_.items():
            sid = _decode(call.resolve_id(key))
            error = await self._update(call, sid, patch, now) if isinstance(patch, dict) \
                else set_error("invalidPatch")
            if error is None:
                updated[key] = None
            else:
                not_updated[key] = error
        for key in destroy:
            sid = _decode(call.resolve_id(key))
            async with self.s.db.write() as conn:
                res = await conn.execute(delete(PS).where(PS.c.account_id == call.account.id,
                                                          PS.c.id == (sid or -1)))
            if res.rowcount:
                destroyed.append(key)
            else:
                not_destroyed[key] = set_error("notFound")
        for url, body, keys in verifications:  # after the commit: the client may answer
            self._spawn(self._post(url, body, keys))
        return {"created": created or None, "updated": updated or None,
                "destroyed": destroyed or None, "notCreated": not_created or None,
                "notUpdated": not_updated or None, "notDestroyed": not_destroyed or None}

    async def _update(self, call: Call, sid: int | None, patch: dict[str, Any],
                      now: int) -> dict[str, Any] | None:
        async with self.s.db.write() as conn:
            row = (await conn.execute(select(PS).where(
                PS.c.account_id == call.account.id, PS.c.id == (sid or -1)))).first()
            if row is None:
                return set_error("notFound")
            values: dict[str, Any] = {}
            for k, v in patch.items():
                if k == "verificationCode":
                    if not isinstance(v, str) or not secrets.compare_digest(
                            v, row.verification_code):
                        return set_error("invalidProperties", "wrong verification code",
                                         properties=["verificationCode"])
                    values["verified"] = True
                elif k == "expires":
                    t = ev.parse_utc_date(v)
                    if t is None:
                        return set_error("invalidProperties", properties=["expires"])
                    values["expires_at"] = min(max(t, now), now + MAX_LIFETIME)
                elif k == "types":
                    if v is not None and (not isinstance(v, list)
                                          or not all(isinstance(t, str) for t in v)):
                        return set_error("invalidProperties", properties=["types"])
                    values["types"] = None if v is None else json.dumps(v)
                else:
                    return set_error("invalidProperties", f"{k} cannot be changed",
                                     properties=[k])
            if values:
                await conn.execute(update(PS).where(PS.c.account_id == call.account.id,
                                                    PS.c.id == row.id).values(**values))
        if values.get("verified"):
            self._watch(call.account.id)
        return None


def _decode(value: Any) -> int | None:
    if isinstance(value, str) and value.startswith("p") and value[1:].isdigit() \
            and len(value) < 20:
        return int(value[1:])
    return None
