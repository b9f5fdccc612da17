"""RFC 9404 Blob/upload, Blob/get, Blob/lookup (capability ``urn:ietf:params:jmap:blob``).

Blob/upload concatenates its data sources and stores the result like an HTTP upload (an upload
blob id, see ``ids``). Blob/get reads any blob the account may read (``JmapService.read_blob``).
Blob/lookup maps blobs to the Emails stored as them (raw message or one of its parts) and to
those emails' Mailboxes and Threads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from mailserver.servers.jmap import errors, ids
from mailserver.servers.jmap.core import Call, JmapCore, arg, string_list, unsigned
from mailserver.servers.jmap.errors import MethodError, set_error
from mailserver.store import schema

if TYPE_CHECKING:
    from mailserver.servers.jmap.service import JmapService

BLOB = "urn:ietf:params:jmap:blob"
MAX_DATA_SOURCES = 64
TYPE_NAMES = ("Email", "Mailbox", "Thread")
DIGESTS = {"digest:sha": hashlib.sha1, "digest:sha-256": hashlib.sha256}


def capability(max_size: int) -> dict[str, Any]:
    return {"maxSizeBlobSet": max_size, "maxDataSources": MAX_DATA_SOURCES,
            "supportedTypeNames": list(TYPE_NAMES),
            "supportedDigestAlgorithms": ["sha", "sha-256"]}


class BlobMethods:
    def __init__(self, service: "JmapService") -> None:
        self.s = service

    def register(self, core: JmapCore) -> None:
        core.register(BLOB, "Blob/upload", self.upload)
        core.register(BLOB, "Blob/get", self.get)
        core.register(BLOB, "Blob/lookup", self.lookup)

    async def upload(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        create = arg(args, "create", dict, {})
        if len(create) > self.s.limits.max_objects_in_set:
            raise MethodError("requestTooLarge")
        created, not_created = {}, {}
        for cid, obj in create.items():
            try:
                data = await self._assemble(call, obj)
            except _Fail as f:
                not_created[cid] = f.error
                continue
            sha = await self.s.blobs.put(data)
            blob_id = ids.upload_blob_id(self.s.secret, call.account.id, sha)
            call.created_ids[cid] = blob_id
            ctype = obj.get("type") if isinstance(obj.get("type"), str) else None
            created[cid] = {"id": blob_id, "type": ctype, "size": len(data)}
        return {"accountId": call.account_id, "created": created or None,
                "notCreated": not_created or None}

    async def _assemble(self, call: Call, obj: Any) -> bytes:
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            raise _Fail(set_error("invalidProperties", properties=["data"]))
        sources = obj["data"]
        if len(sources) > MAX_DATA_SOURCES:
            raise _Fail(set_error("tooManyDataSources"))
        out = bytearray()
        for src in sources:
            if not isinstance(src, dict) or len(src) == 0:
                raise _Fail(set_error("invalidProperties", properties=["data"]))
            if "data:asText" in src and len(src) == 1 and isinstance(src["data:asText"], str):
                out += src["data:asText"].encode("utf-8")
            elif "data:asBase64" in src and len(src) == 1 and \
                    isinstance(src["data:asBase64"], str):
                try:
                    out += base64.b64decode(src["data:asBase64"], validate=True)
                except binascii.Error:
                    raise _Fail(set_error("invalidProperties", properties=["data"])) from None
            elif "blobId" in src and set(src) <= {"blobId", "offset", "length"}:
                data = await self.s.read_blob(call.account.id, call.resolve_id(src["blobId"]))
                if data is None:
                    raise _Fail(set_error("blobNotFound", notFound=[src["blobId"]]))
                offset = src.get("offset") or 0
                length = src.get("length")
                if (not isinstance(offset, int) or offset < 0 or (length is not None and (
                        not isinstance(length, int) or length < 0))
                        or offset + (length or 0) > len(data)):
                    raise _Fail(set_error("invalidProperties", "range outside the blob",
                                          properties=["data"]))
                out += data[offset:] if length is None else data[offset:offset + length]
            else:
                raise _Fail(set_error("invalidProperties", properties=["data"]))
            if len(out) > self.s.limits.max_size_upload:
                raise _Fail(set_error("tooLarge"))
        return bytes(out)

    async def get(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        want = string_list(args, "ids")
        if want is None:
            raise errors.invalid_arguments("ids is required")
        if len(want) > self.s.limits.max_objects_in_get:
            raise MethodError("requestTooLarge")
        props = string_list(args, "properties") or ["data", "size"]
        bad = [p for p in props if p not in ("data", "data:asText", "data:asBase64", "size")
               and p not in DIGESTS]
        if bad:
            raise errors.invalid_arguments(f"unknown properties {bad}")
        offset = unsigned(args, "offset", 0) or 0
        length = unsigned(args, "length")
        out, not_found = [], []
        for key in want:
            blob_id = call.resolve_id(key)
            data = await self.s.read_blob(call.account.id, blob_id)
            if data is None:
                not_found.append(key)
                continue
            item: dict[str, Any] = {"id": blob_id}
            piece = data[offset:] if length is None else data[offset:offset + length]
            truncated = offset + (length or 0) > len(data) if length is not None else \
                offset > len(data)
            text_problem = False
            for p in props:
                if p == "size":
                    item["size"] = len(data)
                elif p in DIGESTS:
                    item[p] = base64.b64encode(DIGESTS[p](piece).digest()).decode()
                elif p == "data:asBase64" or (p == "data" and _not_text(piece)):
                    item["data:asBase64"] = base64.b64encode(piece).decode()
                else:  # data:asText, or data that is valid UTF-8
                    try:
                        item["data:asText"] = piece.decode("utf-8")
                    except UnicodeDecodeError:
                        item["data:asText"] = None
                        text_problem = True
            if text_problem:
                item["isEncodingProblem"] = True
            if truncated:
                item["isTruncated"] = True
            out.append(item)
        return {"accountId": call.account_id, "list": out, "notFound": not_found}

    async def lookup(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        call.check_account(args)
        names = string_list(args, "typeNames")
        want = string_list(args, "ids")
        if names is None or want is None:
            raise errors.invalid_arguments("typeNames and ids are required")
        unknown = [n for n in names if n not in TYPE_NAMES]
        if unknown:
            raise MethodError("unknownDataType", f"cannot look up {unknown}")
        e, mm = schema.emails, schema.mailbox_messages
        out, not_found = [], []
        for key in want:
            ref = ids.parse_blob_id(call.resolve_id(key))
            if ref is None or ref.kind == "upload":
                not_found.append(key)
                continue

            async def body(conn, sha=ref.sha):
                rows = (await conn.execute(select(e.c.id, e.c.thread_id).where(
                    e.c.account_id == call.account.id, e.c.blob_id == sha))).all()
                boxes = []
                if rows:
                    boxes = list((await conn.execute(select(mm.c.mailbox_id).distinct().where(
                        mm.c.account_id == call.account.id,
                        mm.c.email_id.in_([r[0] for r in rows])))).scalars())
                return rows, boxes
            rows, boxes = await self.s.read(body)
            if not rows:
                not_found.append(key)
                continue
            matched: dict[str, list[str]] = {}
            for n in names:
                if n == "Email":
                    matched[n] = [ids.email_id(r[0]) for r in rows]
                elif n == "Thread":
                    matched[n] = sorted({ids.thread_id(r[1]) for r in rows})
                else:
                    matched[n] = [ids.mailbox_id(m) for m in sorted(boxes)]
            out.append({"id": key, "matchedIds": matched})
        return {"accountId": call.account_id, "list": out, "notFound": not_found}


class _Fail(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["type"])
        self.error = error


def _not_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
