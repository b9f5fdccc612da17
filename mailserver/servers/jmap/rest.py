"""A small REST facade for simple integrations, documented at ``GET /v1/openapi.json``.

Every endpoint is translated into a JMAP request and run by the same ``JmapCore`` (same
authentication, limits, state and change events): no second code path into the store.

- ``GET /v1/folders``: the mailboxes.
- ``GET /v1/folders/{id}/messages?limit=&page_token=&filter=read|unread``: newest first. The
  page token is a cursor (the last message of the page, a JMAP query anchor), so messages
  arriving meanwhile do not shift pages; a token whose message is gone answers 400.
- ``GET /v1/messages/{id}``: one message with its text and HTML bodies.
- ``PATCH /v1/messages/{id}``: ``read``, ``flagged``, ``folder_ids`` (move).
- ``POST /v1/messages``: send. Email/set create (in Drafts) + EmailSubmission/set whose
  onSuccessUpdateEmail files it in Sent — the JMAP submission path with its rules. With a
  ``client_mutation_id`` the request is idempotent: the first one claims the key
  (``rest_mutations``) and stores its response, a repeat gets that response (201 → 200) and
  sends nothing; a repeat while the first still runs gets 409.
"""

from __future__ import annotations

import functools
import json
import re
import time
from typing import Any

from aiohttp import web

from mailserver.servers.jmap import core

_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
USING = [core.CORE, core.MAIL]
LIST_PROPS = ["id", "mailboxIds", "keywords", "receivedAt", "from", "to", "subject", "preview",
              "size", "hasAttachment"]
MAX_LIMIT = 100
MAX_BODY = 10 * 1024 * 1024


class RestFacade:
    def __init__(self, service: Any) -> None:
        self.s = service

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/v1/openapi.json", self.openapi)
        r.add_get("/v1/folders", self.folders)
        r.add_get("/v1/folders/{id}/messages", self.folder_messages)
        r.add_get("/v1/messages/{id}", self.message)
        r.add_patch("/v1/messages/{id}", self.patch_message)
        r.add_post("/v1/messages", self.send)

    async def _jmap(self, request: web.Request, calls: list) -> tuple[Any, list]:
        account = await self.s.authenticate(request)
        aid = f"a{account.id}"
        calls = [[name, {"accountId": aid, **args}, str(i)] for i, (name, args) in
                 enumerate(calls)]
        out = await self.s.run_request({"using": USING, "methodCalls": calls}, account)
        responses = out["methodResponses"]
        for name, result, _cid in responses:
            if name == "error":
                raise _error(400 if result["type"] != "serverFail" else 500,
                             result.get("description") or result["type"])
        return account, [r[1] for r in responses]

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI, dumps=_dumps)

    async def folders(self, request: web.Request) -> web.Response:
        _a, [got] = await self._jmap(request, [("Mailbox/get", {"ids": None})])
        return web.json_response({"folders": [_folder(m) for m in got["list"]]}, dumps=_dumps)

    async def folder_messages(self, request: web.Request) -> web.Response:
        folder = request.match_info["id"]
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            raise _error(400, "limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise _error(400, f"limit must be between 1 and {MAX_LIMIT}")
        flt: dict[str, Any] = {"inMailbox": folder}
        if q.get("filter") == "unread":
            flt["notKeyword"] = "$seen"
        elif q.get("filter") == "read":
            flt["hasKeyword"] = "$seen"
        elif q.get("filter") is not None:
            raise _error(400, "filter must be read or unread")
        query: dict[str, Any] = {"filter": flt, "limit": limit + 1,
                                 "sort": [{"property": "receivedAt", "isAscending": False}]}
        token = q.get("page_token")
        if token is not None:
            query["anchor"] = _decode_token(token)
            query["anchorOffset"] = 1
        _a, [got] = await self._jmap(request, [("Mailbox/get", {"ids": [folder],
                                                                "properties": ["id"]})])
        if not got["list"]:
            raise _error(404, "no such folder")
        try:
            _a, [found, emails] = await self._jmap(request, [
                ("Email/query", query),
                ("Email/get", {"#ids": {"resultOf": "0", "name": "Email/query",
                                        "path": "/ids"}, "properties": LIST_PROPS})])
        except web.HTTPBadRequest as e:
            if token and "anchorNotFound" in (e.text or ""):
                # the cursor's message left the folder (or never was in it)
                raise _error(409, "page_token no longer valid: start again") from None
            raise
        by_id = {e["id"]: e for e in emails["list"]}
        page = [by_id[i] for i in found["ids"][:limit] if i in by_id]
        more = len(found["ids"]) > limit
        return web.json_response({
            "messages": [_summary(e) for e in page],
            "next_page_token": _encode_token(page[-1]["id"]) if more and page else None},
            dumps=_dumps)

    async def message(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        _a, [got] = await self._jmap(request, [("Email/get", {
            "ids": [mid], "properties": [*LIST_PROPS, "cc", "textBody", "htmlBody",
                                         "attachments", "bodyValues"],
            "fetchTextBodyValues": True, "fetchHTMLBodyValues": True})])
        if not got["list"]:
            raise _error(404, "no such message")
        e = got["list"][0]
        values = e["bodyValues"]

        def body(parts: list) -> str | None:
            texts = [values[p["partId"]]["value"] for p in parts if p["partId"] in values]
            return "".join(texts) if texts else None
        out = _summary(e)
        out.update({"cc": e.get("cc") or [], "text": body(e["textBody"]),
                    "html": body(e["htmlBody"]),
                    "attachments": [{"name": a["name"], "type": a["type"], "size": a["size"],
                                     "blob_id": a["blobId"]} for a in e["attachments"]]})
        return web.json_response(out, dumps=_dumps)

    async def patch_message(self, request: web.Request) -> web.Response:
        mid = request.match_info["id"]
        body = await _json_body(request)
        if not isinstance(body, dict) or not body:
            raise _error(400, "the body must be a non-empty JSON object")
        patch: dict[str, Any] = {}
        for key, value in body.items():
            if key in ("read", "flagged"):
                if not isinstance(value, bool):
                    raise _error(400, f"{key} must be a boolean")
                patch[f"keywords/{'$seen' if key == 'read' else '$flagged'}"] = value or None
            elif key == "folder_ids":
                if (not isinstance(value, list) or not value
                        or not all(isinstance(v, str) for v in value)):
                    raise _error(400, "folder_ids must be a non-empty array of folder ids")
                patch["mailboxIds"] = {v: True for v in value}
            else:
                raise _error(400, f"unknown field {key!r}")
        _a, [res] = await self._jmap(request, [("Email/set", {"update": {mid: patch}})])
        problem = (res.get("notUpdated") or {}).get(mid)
        if problem is not None:
            if problem["type"] == "notFound":
                raise _error(404, "no such message")
            if "mailbox" in (problem.get("description") or "") or \
                    problem.get("properties") == ["mailboxIds"]:
                raise _error(404, "no such folder")
            raise _error(400, problem.get("description") or problem["type"])
        return await self.message(request)


    # -- sending --------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        account = await self.s.authenticate(request)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _error(400, "the body must be a JSON object")
        email = _draft(body, account.login)
        cmid = body.get("client_mutation_id")
        if cmid is not None and (not isinstance(cmid, str) or not 1 <= len(cmid) <= 128):
            raise _error(400, "client_mutation_id must be a string of 1 to 128 characters")
        if cmid is not None:
            previous = await self._claim(account.id, cmid)
            if previous is not None:
                return web.json_response(json.loads(previous), status=200, dumps=_dumps)
        try:
            out = await self._send(request, account, email)
        except BaseException:
            if cmid is not None:
                await self._release(account.id, cmid)
            raise
        if cmid is not None:
            await self._store(account.id, cmid, out)
        return web.json_response(out, status=201, dumps=_dumps)

    async def _send(self, request: web.Request, account: Any, email: dict[str, Any]):
        aid = f"a{account.id}"
        _a, [boxes] = await self._jmap(request, [("Mailbox/get", {
            "ids": None, "properties": ["role"]})])
        roles = {m["role"]: m["id"] for m in boxes["list"] if m["role"]}
        if "drafts" not in roles or "sent" not in roles:
            raise _error(500, "the account has no Drafts or Sent folder")
        email["mailboxIds"] = {roles["drafts"]: True}
        out = await self.s.run_request({"using": [*USING, core.SUBMISSION], "methodCalls": [
            ["Email/set", {"accountId": aid, "create": {"m": email}}, "0"],
            ["EmailSubmission/set", {
                "accountId": aid,
                "create": {"s": {"identityId": f"i{account.id}", "emailId": "#m"}},
                "onSuccessUpdateEmail": {"#s": {
                    f"mailboxIds/{roles['drafts']}": None, f"mailboxIds/{roles['sent']}": True,
                    "keywords/$draft": None, "keywords/$seen": True}}}, "1"]]}, account)
        responses = out["methodResponses"]
        created = (responses[0][1].get("created") or {}).get("m")
        if created is None:
            problem = (responses[0][1].get("notCreated") or {}).get("m", {})
            raise _error(400, problem.get("description") or
                         f"invalid message: {problem.get('type')} {problem.get('properties')}")
        if responses[1][0] == "error" or not (responses[1][1].get("created") or {}).get("s"):
            problem = {} if responses[1][0] == "error" else \
                (responses[1][1].get("notCreated") or {}).get("s", {})
            # the draft stays in Drafts: nothing was sent
            raise _error(403 if problem.get("type", "").startswith("forbidden") else 400,
                         problem.get("description") or problem.get("type") or "not sent")
        sub = responses[1][1]["created"]["s"]
        return {"id": created["id"], "submission_id": sub["id"], "sent_at": sub["sendAt"]}

    async def _claim(self, account_id: int, cmid: str) -> str | None:
        """Claim an idempotency key; returns the stored response of an earlier request."""
        from sqlalchemy import insert, select
        from sqlalchemy.exc import IntegrityError

        from mailserver.store import schema

        rm = schema.rest_mutations
        try:
            async with self.s.db.write() as conn:
                await conn.execute(insert(rm).values(account_id=account_id,
                                                     client_mutation_id=cmid, response=None,
                                                     created_at=int(time.time())))
            return None
        except IntegrityError:
            async with self.s.db.read() as conn:
                previous = (await conn.execute(select(rm.c.response).where(
                    rm.c.account_id == account_id, rm.c.client_mutation_id == cmid))).scalar()
            if previous is None:
                raise _error(409, "a request with this client_mutation_id is still running")
            return previous

    async def _store(self, account_id: int, cmid: str, out: dict[str, Any]) -> None:
        from sqlalchemy import update

        from mailserver.store import schema

        rm = schema.rest_mutations
        async with self.s.db.write() as conn:
            await conn.execute(update(rm).where(rm.c.account_id == account_id,
                                                rm.c.client_mutation_id == cmid)
                               .values(response=_dumps(out)))

    async def _release(self, account_id: int, cmid: str) -> None:
        from sqlalchemy import delete

        from mailserver.store import schema

        rm = schema.rest_mutations
        async with self.s.db.write() as conn:
            await conn.execute(delete(rm).where(rm.c.account_id == account_id,
                                                rm.c.client_mutation_id == cmid,
                                                rm.c.response.is_(None)))


async def _json_body(request: web.Request) -> Any:
    from mailserver.servers.jmap.service import parse_json

    if (request.content_length or 0) > MAX_BODY:
        raise _error(400, "the body is too large")
    try:
        return parse_json(await request.read())
    except Exception:  # noqa: BLE001 - RequestError notJSON
        raise _error(400, "the body must be valid JSON (I-JSON)") from None


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_EMAIL = r"^[A-Za-z0-9+_-]{1,20}(\.[A-Za-z0-9+_-]{1,20}){0,2}@([A-Za-z0-9]{1,20}\.){1,3}[A-Za-z]{2,10}$"
_NO_CONTROL = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"


def _addresses(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _error(400, f"{name} must be an array")
    out = []
    for a in value:
        if isinstance(a, str):
            a = {"email": a}
        if (not isinstance(a, dict) or not isinstance(a.get("email"), str)
                or re.fullmatch(_EMAIL, a["email"]) is None or set(a) - {"name", "email"}
                or not isinstance(a.get("name", ""), (str, type(None)))
                or _CONTROL.search(a.get("name") or "")):
            raise _error(400, f"{name}: addresses are strings or {{name, email}} objects")
        out.append({"name": a.get("name"), "email": a["email"]})
    return out


def _draft(body: dict[str, Any], login: str) -> dict[str, Any]:
    allowed = {"from", "to", "cc", "bcc", "subject", "text", "html", "client_mutation_id"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _error(400, f"unknown fields {unknown}")
    to = _addresses(body.get("to"), "to")
    cc, bcc = (_addresses(body[k], k) if k in body else [] for k in ("cc", "bcc"))
    if not to:
        raise _error(400, "at least one recipient in to is required")
    sender = _addresses([body["from"]], "from") if "from" in body else \
        [{"name": None, "email": login}]
    for key in ("subject", "text", "html"):
        if key in body and not isinstance(body[key], str):
            raise _error(400, f"{key} must be a string")
    if "text" not in body:
        raise _error(400, "text is required")
    if _CONTROL.search(body.get("subject") or ""):
        raise _error(400, "subject must not contain control characters")
    email: dict[str, Any] = {"from": sender, "to": to, "subject": body.get("subject") or "",
                             "keywords": {"$draft": True}, "bodyValues": {}}
    if cc:
        email["cc"] = cc
    if bcc:
        email["bcc"] = bcc
    if body.get("text") is not None:
        email["bodyValues"]["t"] = {"value": body["text"]}
        email["textBody"] = [{"partId": "t", "type": "text/plain"}]
    if body.get("html") is not None:
        email["bodyValues"]["h"] = {"value": body["html"]}
        email["htmlBody"] = [{"partId": "h", "type": "text/html"}]
    return email


def _folder(m: dict[str, Any]) -> dict[str, Any]:
    return {"id": m["id"], "name": m["name"], "role": m["role"], "parent_id": m["parentId"],
            "total": m["totalEmails"], "unread": m["unreadEmails"]}


def _summary(e: dict[str, Any]) -> dict[str, Any]:
    return {"id": e["id"], "folder_ids": sorted(e["mailboxIds"]), "subject": e["subject"],
            "from": e["from"] or [], "to": e["to"] or [], "received_at": e["receivedAt"],
            "read": "$seen" in e["keywords"], "flagged": "$flagged" in e["keywords"],
            "preview": e["preview"], "size": e["size"],
            "has_attachment": e["hasAttachment"]}


_TOKEN = re.compile(r"c[0-9]{1,18}")


def _encode_token(email_id: str) -> str:
    return "c" + email_id[1:]  # the cursor: the last message of the page


def _decode_token(token: str) -> str:
    if _TOKEN.fullmatch(token) is None:
        raise _error(400, "malformed page_token")
    return "e" + token[1:]


def _error(status: int, detail: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
           409: web.HTTPConflict}.get(status,
                                                            web.HTTPInternalServerError)
    return cls(text=_dumps({"type": "about:blank", "status": status, "detail": detail}),
               content_type="application/problem+json")


_ADDRESS = {"type": "object", "required": ["email"], "properties": {
    "name": {"type": "string", "nullable": True}, "email": {"type": "string"}}}
_SUMMARY_PROPS = {
    "id": {"type": "string"}, "folder_ids": {"type": "array", "items": {"type": "string"}},
    "subject": {"type": "string", "nullable": True},
    "from": {"type": "array", "items": _ADDRESS}, "to": {"type": "array", "items": _ADDRESS},
    "received_at": {"type": "string", "format": "date-time"}, "read": {"type": "boolean"},
    "flagged": {"type": "boolean"}, "preview": {"type": "string"},
    "size": {"type": "integer", "minimum": 0}, "has_attachment": {"type": "boolean"}}
_PROBLEM = {"description": "Problem details (RFC 7807)", "content": {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "mailserver REST API", "version": "1",
             "description": "A small REST facade over the JMAP service of this server."},
    "components": {
        "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                            "bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {"type": "object", "properties": {
                "type": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}}},
            "Folder": {"type": "object", "required": ["id", "name", "total", "unread"],
                       "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                      "role": {"type": "string", "nullable": True},
                                      "parent_id": {"type": "string", "nullable": True},
                                      "total": {"type": "integer", "minimum": 0},
                                      "unread": {"type": "integer", "minimum": 0}}},
            "MessageSummary": {"type": "object", "required": list(_SUMMARY_PROPS),
                               "properties": _SUMMARY_PROPS},
            "Message": {"allOf": [{"$ref": "#/components/schemas/MessageSummary"}, {
                "type": "object", "properties": {
                    "cc": {"type": "array", "items": _ADDRESS},
                    "text": {"type": "string", "nullable": True},
                    "html": {"type": "string", "nullable": True},
                    "attachments": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string", "nullable": True},
                        "type": {"type": "string"}, "size": {"type": "integer"},
                        "blob_id": {"type": "string"}}}}}}]},
            "SendRequest": {"type": "object", "additionalProperties": False,
                            "required": ["to", "text"], "properties": {
                                "from": {"$ref": "#/components/schemas/AddressIn"},
                                "to": {"type": "array", "minItems": 1,
                                       "items": {"$ref": "#/components/schemas/AddressIn"}},
                                "cc": {"type": "array",
                                       "items": {"$ref": "#/components/schemas/AddressIn"}},
                                "bcc": {"type": "array",
                                        "items": {"$ref": "#/components/schemas/AddressIn"}},
                                "subject": {"type": "string", "pattern": _NO_CONTROL},
                                "text": {"type": "string"},
                                "html": {"type": "string"},
                                "client_mutation_id": {"type": "string", "minLength": 1,
                                                       "maxLength": 128}}},
            "AddressIn": {"oneOf": [
                {"type": "string", "pattern": _EMAIL},
                {"type": "object", "required": ["email"], "additionalProperties": False,
                 "properties": {"name": {"type": "string", "nullable": True,
                                         "pattern": _NO_CONTROL},
                                "email": {"type": "string", "pattern": _EMAIL}}}]},
            "SendResult": {"type": "object", "required": ["id", "submission_id", "sent_at"],
                           "properties": {"id": {"type": "string"},
                                          "submission_id": {"type": "string"},
                                          "sent_at": {"type": "string",
                                                      "format": "date-time"}}},
            "MessagePatch": {"type": "object", "minProperties": 1,
                             "additionalProperties": False, "properties": {
                                 "read": {"type": "boolean"}, "flagged": {"type": "boolean"},
                                 "folder_ids": {"type": "array", "minItems": 1,
                                                "items": {"type": "string"}}}},
        },
    },
    "security": [{"basic": []}, {"bearer": []}],
    "paths": {
        "/v1/folders": {"get": {
            "operationId": "listFolders", "summary": "List folders (mailboxes)",
            "responses": {"200": {"description": "The folders", "content": {
                "application/json": {"schema": {"type": "object", "required": ["folders"],
                                                "properties": {"folders": {
                                                    "type": "array", "items": {
                                                        "$ref": "#/components/schemas/Folder"}}}}}}},
                "401": _PROBLEM}}},
        "/v1/folders/{id}/messages": {"get": {
            "operationId": "listMessages", "summary": "Messages of a folder, newest first",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                             "maximum": MAX_LIMIT}},
                {"name": "page_token", "in": "query", "description":
                 "next_page_token of the previous page (409 once its message left the folder)",
                 "schema": {"type": "string", "pattern": "^c[0-9]{1,18}$"}},
                {"name": "filter", "in": "query", "schema": {"type": "string",
                                                              "enum": ["read", "unread"]}}],
            "responses": {"200": {"description": "A page of messages", "content": {
                "application/json": {"schema": {"type": "object", "required": [
                    "messages", "next_page_token"], "properties": {
                    "messages": {"type": "array", "items": {
                        "$ref": "#/components/schemas/MessageSummary"}},
                    "next_page_token": {"type": "string", "nullable": True}}}}}},
                "400": _PROBLEM, "401": _PROBLEM, "404": _PROBLEM, "409": _PROBLEM}}},
        "/v1/messages": {"post": {
            "operationId": "sendMessage",
            "summary": "Send a message (filed in Sent); idempotent with client_mutation_id",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/SendRequest"}}}},
            "responses": {
                "201": {"description": "Sent", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SendResult"}}}},
                "200": {"description": "Sent before with this client_mutation_id",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/SendResult"}}}},
                "400": _PROBLEM, "401": _PROBLEM, "403": _PROBLEM, "409": _PROBLEM}}},
        "/v1/messages/{id}": {
            "get": {"operationId": "getMessage", "summary": "One message with its bodies",
                    "parameters": [{"name": "id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "The message", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}},
                        "401": _PROBLEM, "404": _PROBLEM}},
            "patch": {"operationId": "updateMessage",
                      "summary": "Mark read/unread or flagged, or move to other folders",
                      "parameters": [{"name": "id", "in": "path", "required": True,
                                      "schema": {"type": "string"}}],
                      "requestBody": {"required": True, "content": {"application/json": {
                          "schema": {"$ref": "#/components/schemas/MessagePatch"}}}},
                      "responses": {"200": {"description": "The updated message", "content": {
                          "application/json": {"schema": {"$ref": "#/components/schemas/Message"}}}},
                          "400": _PROBLEM, "401": _PROBLEM, "404": _PROBLEM}}},
    },
}
