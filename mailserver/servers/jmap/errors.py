"""JMAP errors: request-level problems (RFC 8620 §3.6.1, RFC 7807 problem details with an HTTP
status) and method-level errors (§3.6.2, an ``["error", {...}, callId]`` response, HTTP 200).

Set errors (§5.3 SetError) are plain dicts built by ``set_error``; they never abort a method.
"""

from __future__ import annotations

from typing import Any

URN = "urn:ietf:params:jmap:error:"


class RequestError(Exception):
    """The whole request is refused (§3.6.1): unknownCapability, notJSON, notRequest, limit."""

    def __init__(self, kind: str, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.kind, self.status, self.detail, self.extra = kind, status, detail, extra

    def problem(self) -> dict[str, Any]:
        return {"type": URN + self.kind, "status": self.status, "detail": self.detail,
                **self.extra}


def not_json(detail: str = "the request body is not valid I-JSON") -> RequestError:
    return RequestError("notJSON", 400, detail)


def not_request(detail: str) -> RequestError:
    return RequestError("notRequest", 400, detail)


def limit(name: str, detail: str, status: int = 400) -> RequestError:
    return RequestError("limit", status, detail, limit=name)


def unknown_capability(cap: str) -> RequestError:
    return RequestError("unknownCapability", 400,
                        f"the server does not support the capability {cap!r}")


class MethodError(Exception):
    """One method call fails (§3.6.2); the request goes on with the next call."""

    def __init__(self, kind: str, description: str | None = None, **extra: Any) -> None:
        super().__init__(description or kind)
        self.kind, self.description, self.extra = kind, description, extra

    def response(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, **self.extra}
        if self.description:
            out["description"] = self.description
        return out


def invalid_arguments(description: str) -> MethodError:
    return MethodError("invalidArguments", description)


def set_error(kind: str, description: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, **extra}
    if description:
        out["description"] = description
    return out


class SetFailure(Exception):
    """One create/update/destroy of a /set call fails with this SetError (§5.3)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("type"))
        self.error = error
