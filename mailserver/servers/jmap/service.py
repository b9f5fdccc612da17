"""The JMAP HTTP surface on aiohttp: session resource, API, upload, download, EventSource and
WebSocket (RFC 8887), with authentication and the per-account concurrency limits.

Routes (``apiUrl`` etc. in the session resource point here):

- ``GET /.well-known/jmap`` (and ``/jmap/session``): the session resource (RFC 8620 §2).
- ``POST /jmap/api/``: a Request object → a Response object (§3).
- ``POST /jmap/upload/{accountId}/`` and ``GET /jmap/download/{accountId}/{blobId}/{name}``.
- ``GET /jmap/eventsource/?types=&closeafter=&ping=`` (§7.3) and ``GET /jmap/ws`` (RFC 8887).
- ``/v1/…``: the REST facade (``rest``), documented at ``GET /v1/openapi.json``.

Methods: Core/echo (``core``), Mail and Quota (``mail``), Blob/* (``blob``), PushSubscription
(``pushsub``), EmailSubmission (``submission``), Identity (``identity``), VacationResponse
(``vacation``).

Decisions:

- **Authentication** on every request: HTTP Basic (``Directory.authenticate``; app passwords
  work too) or ``Bearer`` tokens (``Directory.authenticate_token``). A password hash costs
  milliseconds, so a successful credential is remembered for ``AUTH_CACHE_SECONDS`` by the
  SHA-256 of the header (a changed password or disabled account takes effect after that).
  Failures go through the shared ``LoginThrottle`` (tarpit delay, then 429 with Retry-After).
- **URLs** in the session resource use ``[jmap] base_url`` when set, else the scheme and Host of
  the request that fetched the session (what the client can reach).
- Request-level errors are RFC 7807 problem details (``application/problem+json``) with status
  400 (notJSON, notRequest, unknownCapability, limit), 401 unauthenticated, 404 unknown
  account or blob, 413 an upload over ``maxSizeUpload``, 429 over a concurrency limit.
- I-JSON (RFC 7493): duplicate member names, NaN/Infinity and invalid UTF-8 are notJSON.
- Reads go through ``Database.run_read`` (on SQLite: ``store.sqlitereader`` threads, one hop per
  transaction, no async pool);
  responses are serialized by ``dumps_response``, which splices in the ready JSON of list
  views (``emailview.PrerenderedList``).
- Push: EventSource and WebSocket subscribe to ``app.bus`` before answering, so every commit
  after the response headers is seen; an event is only a hint — the pushed state is the
  account MODSEQ the event carries. ``EmailDelivery`` is announced with Email changes that
  touch a Thread (new or removed emails), not with keyword-only changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import re
import secrets
import time
import urllib.parse
from typing import Any

from aiohttp import WSMsgType, web
from sqlalchemy import insert, select

from mailserver.message.mime import decode_body
from mailserver.message.model import MimePart
from mailserver.servers.jmap import core, errors, ids, queries
from mailserver.servers.jmap import emailview as ev
from mailserver.servers.jmap.blob import BLOB, BlobMethods
from mailserver.servers.jmap.blob import capability as blob_capability
from mailserver.servers.jmap.core import JmapCore, Limits
from mailserver.servers.jmap.errors import RequestError
from mailserver.servers.jmap.identity import Identities
from mailserver.servers.jmap.mail import MailMethods
from mailserver.servers.jmap.pushsub import PushSubscriptions
from mailserver.servers.jmap.rest import RestFacade
from mailserver.servers.jmap.submission import Submissions
from mailserver.servers.jmap.vacation import VacationMethods
from mailserver.store import schema
from mailserver.store.sqlitereader import NotInline

log = logging.getLogger("mailserver.jmap")

AUTH_CACHE_SECONDS = 60.0
AUTH_CACHE_MAX = 10_000
SECRET_KEY = "jmap_blob_secret"
MIN_PING = 1
MAX_PING = 3600
_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


class JmapService:
    """Everything one JMAP daemon process shares between its requests."""

    def __init__(self, app: Any, section: Any, throttle: Any) -> None:
        self.app = app
        self.section = section
        self.db, self.blobs, self.bus = app.db, app.blobs, app.bus
        self.deliverer, self.directory = app.deliverer, app.directory
        self.hostname = app.config.server.effective_hostname()
        self.limits = Limits(max_size_upload=app.config.limits.max_message_size)
        self.core = JmapCore(self.limits)
        self.mail = MailMethods(self)
        self.mail.register(self.core)
        self.identities = Identities(self)  # EmailSubmission checks identities with it
        self.identities.register(self.core)
        Submissions(self).register(self.core)
        VacationMethods(self).register(self.core)
        BlobMethods(self).register(self.core)
        self.push_subscriptions = PushSubscriptions(self)
        self.push_subscriptions.register(self.core)
        self.throttle = throttle
        self.secret = b""
        self._auth_cache: dict[str, tuple[float, Any]] = {}
        self._requests: dict[int, int] = {}
        self._uploads: dict[int, int] = {}
        self.stopping = asyncio.Event()
        self._sockets: set[web.WebSocketResponse] = set()

    async def load_secret(self) -> None:
        """The HMAC key of upload blob ids, shared by every process through ``settings``."""
        st = schema.settings
        async with self.db.read() as conn:
            value = (await conn.execute(select(st.c.value).where(st.c.key == SECRET_KEY))
                     ).scalar()
        if value is None:
            try:
                async with self.db.write() as conn:
                    await conn.execute(insert(st).values(key=SECRET_KEY,
                                                         value=secrets.token_bytes(32)))
            except Exception:  # noqa: BLE001 - another process won the race: read theirs
                pass
            async with self.db.read() as conn:
                value = (await conn.execute(select(st.c.value).where(st.c.key == SECRET_KEY))
                         ).scalar_one()
        self.secret = bytes(value)

    async def read(self, body, *, in_thread: bool = True):
        """``body(conn)`` in one read transaction; on SQLite the whole transaction (BEGIN,
        body, COMMIT) in one thread hop (``store.sqlitereader``)."""
        if in_thread:
            return await self.db.run_read(body)
        async with self.db.read() as conn:
            return await body(conn)

    def read_inline(self, body) -> Any:
        """``body(conn)`` in a read transaction on the event loop thread — SQLite only, for a
        few single-row reads (``store.sqlitereader.run_inline``); None when that is not
        possible (PostgreSQL, or a lock in the way): the caller then uses ``read``."""
        reader = self.db.raw_reader()
        if reader is None:
            return None
        try:
            return reader.run_inline(body)
        except NotInline:  # SQLITE_BUSY (WAL recovery, checkpoint restart …)
            return None

    # ------------------------------------------------------------------------------------------
    # the web application
    # ------------------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=max(self.limits.max_size_upload,
                                                  self.limits.max_size_request) + 1,
                              middlewares=[self._errors])
        r = app.router
        r.add_get("/.well-known/jmap", self.session)
        r.add_get("/jmap/session", self.session)
        r.add_post("/jmap/api", self.api)
        r.add_post("/jmap/api/", self.api)
        r.add_post("/jmap/upload/{accountId}", self.upload)
        r.add_post("/jmap/upload/{accountId}/", self.upload)
        r.add_get("/jmap/download/{accountId}/{blobId}/{name}", self.download)
        r.add_get("/jmap/eventsource", self.eventsource)
        r.add_get("/jmap/eventsource/", self.eventsource)
        r.add_get("/jmap/ws", self.websocket)
        RestFacade(self).add_routes(app)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except RequestError as e:
            resp = problem(e.status, e.problem())
            if e.extra.get("limit") in ("maxSizeRequest", "maxSizeUpload"):
                resp.force_close()  # the rest of the body is not read: drop the connection
            return resp
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("JMAP %s %s failed", request.method, request.path)
            return problem(500, {"type": "about:blank", "status": 500,
                                 "detail": "internal server error"})

    # ------------------------------------------------------------------------------------------
    # authentication
    # ------------------------------------------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Any:
        header = request.headers.get("Authorization", "")
        if not header:
            raise _unauthorized("authentication required")
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).hexdigest()
        now = time.monotonic()
        hit = self._auth_cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        scheme, _, cred = header.partition(" ")
        scheme, cred = scheme.lower(), cred.strip()
        login = password = token = None
        if scheme == "basic":
            try:
                decoded = base64.b64decode(cred, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise _unauthorized("malformed Basic credentials") from None
            login, sep, password = decoded.partition(":")
            if not sep:
                raise _unauthorized("malformed Basic credentials")
        elif scheme == "bearer" and cred:
            token = cred
        else:
            raise _unauthorized("unsupported authentication scheme")
        ip = request.remote
        user = (login or "").lower() or None
        decision = await self.throttle.check(ip, user)
        if not decision.allowed:
            raise web.HTTPTooManyRequests(
                headers={"Retry-After": str(max(1, int(decision.retry_after)))},
                text=_dumps({"type": "about:blank", "status": 429,
                             "detail": "too many failed logins; try again later"}),
                content_type="application/problem+json")
        if token is not None:
            account = await self.directory.authenticate_token(token)
        else:
            account = await self.directory.authenticate(login, password)
        if account is None:
            d = await self.throttle.failed(ip, user)
            if d.delay:
                await asyncio.sleep(d.delay)
            log.info("JMAP authentication failed", extra={
                "event": "auth_failed", "peer": ip, "user": user or "(token)"})
            raise _unauthorized("invalid credentials")
        await self.throttle.succeeded(ip, user)
        if len(self._auth_cache) >= AUTH_CACHE_MAX:
            self._auth_cache.clear()
        self._auth_cache[key] = (now + AUTH_CACHE_SECONDS, account)
        return account

    # ------------------------------------------------------------------------------------------
    # session
    # ------------------------------------------------------------------------------------------

    def base_url(self, request: web.Request) -> str:
        if self.section.base_url:
            return self.section.base_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    def session_state(self, account: Any) -> str:
        return hashlib.sha256(f"{account.id}:{account.login}:1".encode()).hexdigest()[:16]

    def session_object(self, request: web.Request, account: Any) -> dict[str, Any]:
        base = self.base_url(request)
        ws_base = "wss" + base[5:] if base.startswith("https") else "ws" + base[4:]
        aid = ids.account_id(account.id)
        mail_cap = {"maxMailboxesPerEmail": None, "maxMailboxDepth": 32,
                    "maxSizeMailboxName": 255,
                    "maxSizeAttachmentsPerEmail": self.limits.max_size_upload,
                    "emailQuerySortOptions": ["receivedAt", "sentAt", "size", "from", "to",
                                              "subject"],
                    "mayCreateTopLevelMailbox": True}
        return {
            "capabilities": {
                core.CORE: self.limits.capability(),
                core.MAIL: {},
                core.SUBMISSION: {},
                core.VACATION: {},
                core.QUOTA: {},
                BLOB: {},
                core.WEBSOCKET: {"url": f"{ws_base}/jmap/ws", "supportsPush": True},
            },
            "accounts": {aid: {
                "name": account.login, "isPersonal": True, "isReadOnly": False,
                "accountCapabilities": {core.MAIL: mail_cap,
                                        core.SUBMISSION: {"maxDelayedSend": 0,
                                                          "submissionExtensions": {}},
                                        core.QUOTA: {}, core.VACATION: {},
                                        BLOB: blob_capability(self.limits.max_size_upload)}}},
            "primaryAccounts": {core.MAIL: aid, core.SUBMISSION: aid, core.QUOTA: aid,
                                BLOB: aid, core.VACATION: aid},
            "username": account.login,
            "apiUrl": f"{base}/jmap/api/",
            "downloadUrl": f"{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}"
                           "?accept={type}",
            "uploadUrl": f"{base}/jmap/upload/{{accountId}}/",
            "eventSourceUrl": f"{base}/jmap/eventsource/?types={{types}}"
                              "&closeafter={closeafter}&ping={ping}",
            "state": self.session_state(account),
        }

    async def session(self, request: web.Request) -> web.Response:
        account = await self.authenticate(request)
        return web.json_response(self.session_object(request, account), dumps=_dumps,
                                 headers={"Cache-Control": "no-cache, no-store"})

    # ------------------------------------------------------------------------------------------
    # API
    # ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _slot(self, table: dict[int, int], account_id: int, limit: int, name: str):
        if table.get(account_id, 0) >= limit:
            raise errors.limit(name, f"more than {limit} concurrent requests", status=429)
        table[account_id] = table.get(account_id, 0) + 1
        try:
            yield
        finally:
            table[account_id] -= 1
            if not table[account_id]:
                del table[account_id]

    async def run_request(self, obj: Any, account: Any) -> dict[str, Any]:
        with self._slot(self._requests, account.id, self.limits.max_concurrent_requests,
                        "maxConcurrentRequests"):
            return await self.core.process(obj, account, self.session_state(account))

    async def api(self, request: web.Request) -> web.Response:
        account = await self.authenticate(request)
        if (request.content_length or 0) > self.limits.max_size_request:
            raise errors.limit("maxSizeRequest", "the request is larger than maxSizeRequest")
        body = await _read_limited(request, self.limits.max_size_request)
        if body is None:
            raise errors.limit("maxSizeRequest", "the request is larger than maxSizeRequest")
        obj = parse_json(body)
        out = await self.run_request(obj, account)
        return web.Response(text=dumps_response(out), content_type="application/json")

    # ------------------------------------------------------------------------------------------
    # blobs
    # ------------------------------------------------------------------------------------------

    async def read_blob(self, account_id: int, blob_id: Any) -> bytes | None:
        """The bytes behind a JMAP blob id this account may read, else None."""
        ref = ids.parse_blob_id(blob_id)
        if ref is None:
            return None
        if ref.kind == "upload":
            if not ids.upload_mac_ok(self.secret, account_id, ref):
                return None
            try:
                return await self.blobs.get(ref.sha)
            except LookupError:
                return None
        async with self.db.read() as conn:
            email_id = await queries.owns_blob(conn, account_id, ref.sha)
            structure = None
            if email_id is not None and ref.kind == "part":
                structure = await queries.email_structure(conn, account_id, email_id)
        if email_id is None:
            return None
        try:
            raw = await self.blobs.get(ref.sha)
        except LookupError:
            return None
        if ref.kind == "raw":
            return raw
        if not structure:
            return None
        part = ev.find_part(MimePart.from_dict(json.loads(structure)), ref.part)
        if part is None or ev.is_multipart(part):
            return None
        return decode_body(raw, part)

    def _check_account_path(self, request: web.Request, account: Any) -> None:
        if request.match_info["accountId"] != ids.account_id(account.id):
            raise web.HTTPNotFound(text=_dumps({"type": "about:blank", "status": 404,
                                                "detail": "no such account"}),
                                   content_type="application/problem+json")

    async def upload(self, request: web.Request) -> web.Response:
        account = await self.authenticate(request)
        self._check_account_path(request, account)
        limit = self.limits.max_size_upload
        if (request.content_length or 0) > limit:
            raise errors.limit("maxSizeUpload", f"uploads are limited to {limit} bytes",
                               status=413)
        with self._slot(self._uploads, account.id, self.limits.max_concurrent_upload,
                        "maxConcurrentUpload"):
            data = await _read_limited(request, limit)
            if data is None:
                raise errors.limit("maxSizeUpload", f"uploads are limited to {limit} bytes",
                                   status=413)
            sha = await self.blobs.put(data)  # durable before we answer
        ctype = request.headers.get("Content-Type", "application/octet-stream")
        return web.json_response({
            "accountId": ids.account_id(account.id),
            "blobId": ids.upload_blob_id(self.secret, account.id, sha),
            "type": ctype.split(";")[0].strip() or "application/octet-stream",
            "size": len(data)}, status=201, dumps=_dumps)

    async def download(self, request: web.Request) -> web.StreamResponse:
        account = await self.authenticate(request)
        self._check_account_path(request, account)
        data = await self.read_blob(account.id, request.match_info["blobId"])
        if data is None:
            raise web.HTTPNotFound(text=_dumps({"type": "about:blank", "status": 404,
                                                "detail": "no such blob"}),
                                   content_type="application/problem+json")
        accept = request.query.get("accept", "application/octet-stream")
        if not _media_type_ok(accept):
            accept = "application/octet-stream"
        name = request.match_info["name"]
        disposition = "attachment; filename*=UTF-8''" + urllib.parse.quote(name, safe="")
        return web.Response(body=data, headers={
            "Content-Type": accept, "Content-Disposition": disposition,
            "Cache-Control": "private, immutable, max-age=31536000"})

    # ------------------------------------------------------------------------------------------
    # push
    # ------------------------------------------------------------------------------------------

    @staticmethod
    def push_types(event_types: frozenset[str]) -> set[str]:
        out = set()
        if "Email" in event_types or "Membership" in event_types:
            out.add("Email")
        if "Email" in event_types and "Thread" in event_types:
            out.add("EmailDelivery")
        if "Mailbox" in event_types:
            out.add("Mailbox")
        if "Thread" in event_types:
            out.add("Thread")
        # the types of ``identity``, ``submission`` and ``vacation`` keep their names
        out.update(event_types & {"Identity", "EmailSubmission", "VacationResponse"})
        return out

    def state_change(self, account: Any, event: Any,
                     wanted: set[str] | None) -> dict[str, Any] | None:
        return self.state_change_for(account.id, event, wanted)

    def state_change_for(self, account_id: int, event: Any,
                         wanted: set[str] | None) -> dict[str, Any] | None:
        types = self.push_types(event.types)
        if wanted is not None:
            types &= wanted
        if not types:
            return None
        state = ids.state(event.modseq)
        return {"@type": "StateChange",
                "changed": {ids.account_id(account_id): {t: state for t in sorted(types)}}}

    async def eventsource(self, request: web.Request) -> web.StreamResponse:
        account = await self.authenticate(request)
        q = request.query
        types_arg = q.get("types", "*")
        wanted = None if types_arg in ("*", "") else set(types_arg.split(","))
        closeafter = q.get("closeafter", "no")
        if closeafter not in ("state", "no"):
            raise errors.RequestError("notRequest", 400, "closeafter must be state or no")
        try:
            ping = int(q.get("ping", "0"))
        except ValueError:
            raise errors.RequestError("notRequest", 400, "ping must be a number") from None
        if ping < 0:
            raise errors.RequestError("notRequest", 400, "ping must not be negative")
        if ping:
            ping = min(max(ping, MIN_PING), MAX_PING)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        async with self.bus.subscribe(account.id) as events:
            await resp.prepare(request)
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                while True:
                    nxt = asyncio.ensure_future(events.__anext__())
                    done, _ = await asyncio.wait({nxt, stop}, timeout=ping or None,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if stop in done or not done:
                        nxt.cancel()
                        if stop in done:
                            break
                        await resp.write(f"event: ping\ndata: {_dumps({'interval': ping})}"
                                         "\n\n".encode())
                        continue
                    try:
                        event = nxt.result()
                    except StopAsyncIteration:
                        break
                    change = self.state_change(account, event, wanted)
                    if change is None:
                        continue
                    await resp.write(f"event: state\nid: {event.modseq}\n"
                                     f"data: {_dumps(change)}\n\n".encode())
                    if closeafter == "state":
                        break
            except (ConnectionResetError, asyncio.CancelledError):
                pass
            finally:
                stop.cancel()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write_eof()
        return resp

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        account = await self.authenticate(request)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                   .split(",")]
        if "jmap" not in offered:  # RFC 8887 §4: the "jmap" subprotocol is required
            return problem(400, {"type": "about:blank", "status": 400,
                                 "detail": "the jmap WebSocket subprotocol is required"})
        ws = web.WebSocketResponse(protocols=("jmap",), max_msg_size=self.limits.max_size_request,
                                   autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        push: asyncio.Task | None = None
        try:
            async for m in ws:
                if m.type == WSMsgType.TEXT:
                    reply, push = await self._ws_message(ws, account, m.data, push)
                    if reply is not None:
                        await ws.send_str(dumps_response(reply))
                elif m.type == WSMsgType.BINARY:
                    await ws.send_str(_dumps(_ws_error(None, errors.not_json(
                        "binary messages are not JMAP"))))
                elif m.type == WSMsgType.ERROR:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if push is not None:
                push.cancel()
            self._sockets.discard(ws)
        return ws

    async def _ws_message(self, ws: web.WebSocketResponse, account: Any, data: str,
                          push: asyncio.Task | None):
        request_id = None
        try:
            obj = parse_json(data.encode("utf-8", "surrogatepass"))
            if not isinstance(obj, dict):
                raise errors.not_request("a WebSocket message must be a JSON object")
            kind = obj.get("@type")
            request_id = obj.get("id") if isinstance(obj.get("id"), str) else None
            if kind == "Request":
                if len(data) > self.limits.max_size_request:
                    raise errors.limit("maxSizeRequest", "the request is too large")
                out = await self.run_request(obj, account)
                reply = {"@type": "Response", **out}
                if request_id is not None:
                    reply["requestId"] = request_id
                return reply, push
            if kind == "WebSocketPushEnable":
                types = obj.get("dataTypes")
                if types is not None and (not isinstance(types, list) or not all(
                        isinstance(t, str) for t in types)):
                    raise errors.not_request("dataTypes must be null or an array of strings")
                if push is not None:
                    push.cancel()
                ready = asyncio.Event()
                push = asyncio.create_task(self._ws_push(
                    ws, account, None if types is None else set(types), obj.get("pushState"),
                    ready))
                # subscribed before the next message is read: no later commit is missed
                waiter = asyncio.ensure_future(ready.wait())
                await asyncio.wait({push, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                return None, push
            if kind == "WebSocketPushDisable":
                if push is not None:
                    push.cancel()
                return None, None
            raise errors.not_request("unknown @type (Request, WebSocketPushEnable or "
                                     "WebSocketPushDisable)")
        except RequestError as e:
            return _ws_error(request_id, e), push

    async def _ws_push(self, ws: web.WebSocketResponse, account: Any, wanted: set[str] | None,
                       push_state: Any, ready: asyncio.Event) -> None:
        async with self.bus.subscribe(account.id) as events:
            ready.set()
            since = ids.parse_state(push_state) if isinstance(push_state, str) else None
            if since is not None:
                # RFC 8887 §4.3.5.2: changes since the client's pushState are sent at once
                async with self.db.read() as conn:
                    current = await queries.account_modseq(conn, account.id)
                if current > since:
                    from mailserver.events import ChangeEvent
                    await self._ws_send_change(ws, account, ChangeEvent(
                        account.id, current, frozenset({"Email", "Mailbox", "Thread"})), wanted)
            async for event in events:
                if ws.closed:
                    return
                await self._ws_send_change(ws, account, event, wanted)

    async def _ws_send_change(self, ws, account, event, wanted) -> None:
        change = self.state_change(account, event, wanted)
        if change is None:
            return
        change["pushState"] = ids.state(event.modseq)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await ws.send_str(_dumps(change))

    async def close_sockets(self) -> None:
        self.stopping.set()
        await self.push_subscriptions.close()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")


_SPLICE = f"\x00{secrets.token_hex(8)}:"


def dumps_response(obj: dict[str, Any]) -> str:
    """A Response object (RFC 8620 §3.4) as JSON text, the same as ``_dumps``, with the
    ``list`` of every ``emailview.PrerenderedList`` result spliced in from its ready JSON
    (measured: encoding the 50 Emails of a list view was a quarter of the request's CPU)."""
    calls = obj.get("methodResponses")
    ready = [i for i, r in enumerate(calls or ())
             if isinstance(r, list) and len(r) == 3
             and isinstance(r[1], ev.PrerenderedList)]
    if not ready:
        return _dumps(obj)
    calls = list(calls)
    texts = {}
    for i in ready:
        name, result, call_id = calls[i]
        marker = f"{_SPLICE}{i}"
        calls[i] = [name, {**result, "list": marker}, call_id]
        texts[_dumps(marker)] = result.list_json
    text = _dumps({**obj, "methodResponses": calls})
    for marker, list_json in texts.items():
        text = text.replace(marker, list_json, 1)
    return text


def _ws_error(request_id: str | None, e: RequestError) -> dict[str, Any]:
    out = {"@type": "RequestError", **e.problem()}
    if request_id is not None:
        out["requestId"] = request_id
    return out


def problem(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=_dumps(body),
                        content_type="application/problem+json")


def _unauthorized(detail: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        headers={"WWW-Authenticate": 'Basic realm="jmap", charset="UTF-8"'},
        text=_dumps({"type": "about:blank", "status": 401, "detail": detail}),
        content_type="application/problem+json")


def _media_type_ok(value: str) -> bool:
    return re.fullmatch(r"[\w.+-]+/[\w.+-]+", value) is not None


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` (without buffering more than that)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(body: bytes) -> Any:
    """I-JSON (RFC 7493) or notJSON: UTF-8, no duplicate member names, no NaN/Infinity, no
    lone surrogates (§2.1: strings must be valid Unicode)."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates,
                           parse_constant=_no_constants)
        if _SURROGATE_ESCAPE.search(text):  # escaped surrogates: they must pair up
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except (UnicodeError, ValueError, RecursionError):
        raise errors.not_json() from None
