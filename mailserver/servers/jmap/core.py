"""The JMAP core (RFC 8620): request validation, method dispatch, result references, creation
ids, the capability limits, Core/echo. No HTTP here: ``JmapCore.process`` takes the parsed JSON
request and returns the response object; the transports (``http``) map ``RequestError`` to a
problem-details response.

Decisions:

- Methods are coroutines ``fn(call, args) -> dict`` registered with the capability that must be
  in ``using``; an unregistered name, or one whose capability is not in ``using``, is
  ``unknownMethod`` (§3.6.2).
- Result references (§3.7) are resolved before the method runs; a reference to a call that does
  not exist, to an error response, to another method name, or a path that does not evaluate is
  ``invalidResultReference``. ``foo`` and ``#foo`` together are ``invalidArguments``.
- Creation ids (§5.3): ``#k`` wherever the methods take an id resolves to the id created
  earlier in the request (or given in ``createdIds``); an unknown one is treated as an id that
  does not exist (notFound), as Fastmail and Cyrus do.
- A method that raises anything but ``MethodError`` answers ``serverFail`` (logged with the
  method name), never a broken response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mailserver.servers.jmap import errors
from mailserver.servers.jmap.errors import MethodError

log = logging.getLogger("mailserver.jmap")

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
WEBSOCKET = "urn:ietf:params:jmap:websocket"
QUOTA = "urn:ietf:params:jmap:quota"
BLOB = "urn:ietf:params:jmap:blob"
VACATION = "urn:ietf:params:jmap:vacationresponse"
KNOWN_CAPABILITIES = frozenset({CORE, MAIL, SUBMISSION, WEBSOCKET, QUOTA, BLOB, VACATION})

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The ``urn:ietf:params:jmap:core`` capability (RFC 8620 §2), announced and enforced."""

    max_size_upload: int = 50 * MiB
    max_concurrent_upload: int = 4
    max_size_request: int = 10 * MiB
    max_concurrent_requests: int = 8
    max_calls_in_request: int = 32
    max_objects_in_get: int = 1000
    max_objects_in_set: int = 1000

    def capability(self) -> dict[str, Any]:
        return {
            "maxSizeUpload": self.max_size_upload,
            "maxConcurrentUpload": self.max_concurrent_upload,
            "maxSizeRequest": self.max_size_request,
            "maxConcurrentRequests": self.max_concurrent_requests,
            "maxCallsInRequest": self.max_calls_in_request,
            "maxObjectsInGet": self.max_objects_in_get,
            "maxObjectsInSet": self.max_objects_in_set,
            "collationAlgorithms": ["i;ascii-numeric", "i;ascii-casemap", "i;unicode-casemap"],
        }


@dataclass(slots=True)
class Call:
    """What a method sees of its request: who, which capabilities, the created ids so far."""

    account: Any  # mailserver.store.directory.Account
    using: frozenset[str]
    created_ids: dict[str, str]
    name: str = ""
    call_id: str = ""
    extra_responses: list[list[Any]] = field(default_factory=list)

    @property
    def account_id(self) -> str:
        return f"a{self.account.id}"

    def check_account(self, args: dict[str, Any], key: str = "accountId") -> None:
        value = args.get(key)
        if not isinstance(value, str):
            raise errors.invalid_arguments(f"{key} must be a string")
        if value != self.account_id:
            raise MethodError("accountNotFound")

    def resolve_id(self, value: Any) -> Any:
        """``#creationId`` → the id created for it; other values unchanged."""
        if isinstance(value, str) and value.startswith("#"):
            return self.created_ids.get(value[1:], value)
        return value


Method = Callable[[Call, dict[str, Any]], Awaitable[dict[str, Any]]]


class JmapCore:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.methods: dict[str, tuple[str, Method]] = {}
        self.register(CORE, "Core/echo", _echo)

    def register(self, capability: str, name: str, fn: Method) -> None:
        self.methods[name] = (capability, fn)

    async def process(self, request: Any, account: Any, session_state: str) -> dict[str, Any]:
        """Run one Request object (§3.3); raises RequestError for request-level problems."""
        using, calls, created = _validate(request)
        for cap in using:
            if cap not in KNOWN_CAPABILITIES:
                raise errors.unknown_capability(cap)
        if len(calls) > self.limits.max_calls_in_request:
            raise errors.limit("maxCallsInRequest",
                               f"more than {self.limits.max_calls_in_request} method calls")
        call_ctx = Call(account, frozenset(using), dict(created or {}))
        responses: list[list[Any]] = []
        for name, args, call_id in calls:
            call_ctx.name, call_ctx.call_id = name, call_id
            call_ctx.extra_responses = []
            try:
                resolved = _resolve_references(args, responses)
                entry = self.methods.get(name)
                if entry is None or entry[0] not in call_ctx.using:
                    raise MethodError("unknownMethod", f"unknown method {name!r}")
                result = await entry[1](call_ctx, resolved)
                responses.append([name, result, call_id])
                responses.extend(call_ctx.extra_responses)
            except MethodError as e:
                responses.append(["error", e.response(), call_id])
            except Exception:  # noqa: BLE001 - a bug in one method must not break the request
                log.exception("JMAP method %s failed", name)
                responses.append(["error", {"type": "serverFail"}, call_id])
        out: dict[str, Any] = {"methodResponses": responses, "sessionState": session_state}
        if created is not None:
            out["createdIds"] = call_ctx.created_ids
        return out


async def _echo(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return args  # RFC 8620 §4


def _validate(request: Any) -> tuple[list[str], list[tuple[str, dict, str]],
                                      dict[str, str] | None]:
    """Check the Request object's shape (§3.3); anything else is notRequest (§3.6.1)."""
    if not isinstance(request, dict):
        raise errors.not_request("the request must be a JSON object")
    using = request.get("using")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        raise errors.not_request("'using' must be an array of capability strings")
    calls = request.get("methodCalls")
    if not isinstance(calls, list):
        raise errors.not_request("'methodCalls' must be an array")
    out = []
    for c in calls:
        if (not isinstance(c, list) or len(c) != 3 or not isinstance(c[0], str)
                or not isinstance(c[1], dict) or not isinstance(c[2], str)):
            raise errors.not_request(
                "each method call must be [name (string), arguments (object), id (string)]")
        out.append((c[0], c[1], c[2]))
    created = request.get("createdIds")
    if created is not None and (not isinstance(created, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in created.items())):
        raise errors.not_request("'createdIds' must map creation ids to ids")
    return list(using), out, created


# ---------------------------------------------------------------------------------------------
# Result references (RFC 8620 §3.7)
# ---------------------------------------------------------------------------------------------

def _resolve_references(args: dict[str, Any], responses: list[list[Any]]) -> dict[str, Any]:
    if not any(k.startswith("#") for k in args):
        return args
    out = dict(args)
    for key in [k for k in args if k.startswith("#")]:
        plain = key[1:]
        if plain in args:
            raise errors.invalid_arguments(f"both {plain!r} and {key!r} given")
        ref = args[key]
        if (not isinstance(ref, dict) or not isinstance(ref.get("resultOf"), str)
                or not isinstance(ref.get("name"), str) or not isinstance(ref.get("path"), str)):
            raise MethodError("invalidResultReference",
                              f"{key}: a ResultReference needs resultOf, name and path strings")
        target = None
        for name, result, call_id in responses:
            if call_id == ref["resultOf"]:
                target = (name, result)
                break  # the first response with that id (§3.7)
        if target is None or target[0] != ref["name"]:
            raise MethodError("invalidResultReference",
                              f"{key}: no {ref['name']} response with id {ref['resultOf']!r}")
        try:
            out[plain] = evaluate_pointer(target[1], ref["path"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise MethodError("invalidResultReference",
                              f"{key}: path {ref['path']!r} does not evaluate") from None
        del out[key]
    return out


def evaluate_pointer(value: Any, path: str) -> Any:
    """RFC 6901 JSON Pointer with the JMAP ``*`` extension (RFC 8620 §3.7): ``*`` on an array
    applies the rest of the pointer to every item, flattening array results one level."""
    if path == "":
        return value
    if not path.startswith("/"):
        raise ValueError("a pointer starts with /")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    return _walk(value, tokens)


def _walk(value: Any, tokens: list[str]) -> Any:
    if not tokens:
        return value
    token, rest = tokens[0], tokens[1:]
    if isinstance(value, list):
        if token == "*":
            out: list[Any] = []
            for item in value:
                r = _walk(item, rest)
                if isinstance(r, list):
                    out.extend(r)
                else:
                    out.append(r)
            return out
        if not token.isdigit() or (token != "0" and token.startswith("0")):
            raise ValueError(f"bad array index {token!r}")
        return _walk(value[int(token)], rest)
    if isinstance(value, dict):
        return _walk(value[token], rest)
    raise TypeError("cannot descend into a scalar")


# ---------------------------------------------------------------------------------------------
# Argument helpers shared by the method modules
# ---------------------------------------------------------------------------------------------

def arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None,
        *, nullable: bool = True) -> Any:
    """``args[name]`` checked against ``kind`` (bool is never an int); invalidArguments else."""
    if name not in args:
        return default
    value = args[name]
    if value is None:
        if nullable:
            return default
        raise errors.invalid_arguments(f"{name} must not be null")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise errors.invalid_arguments(f"{name} has the wrong type")
    if not isinstance(value, kinds):
        raise errors.invalid_arguments(f"{name} has the wrong type")
    return value


def unsigned(args: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = arg(args, name, int, default)
    if value is not None and value < 0:
        raise errors.invalid_arguments(f"{name} must not be negative")
    return value


def string_list(args: dict[str, Any], name: str) -> list[str] | None:
    value = arg(args, name, list)
    if value is not None and not all(isinstance(v, str) for v in value):
        raise errors.invalid_arguments(f"{name} must be an array of strings")
    return value
