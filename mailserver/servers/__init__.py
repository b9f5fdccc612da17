"""One module per daemon: binds a protocol state machine to asyncio streams and the services.

The registry below is how ``mailserver serve`` finds daemons. Each entry names a coroutine
function ``start(app, section) -> RunningDaemon``: it binds its listeners (from ``section``, the
daemon's config section, and ``app.config`` for shared settings such as TLS and limits), starts
its tasks, and returns once it accepts work; ``RunningDaemon.stop()`` closes the listeners,
finishes or aborts sessions and returns when everything is released.

A daemon whose module does not exist yet is "not available": ``serve`` without names skips it,
``serve NAME`` refuses it. Adding a daemon = writing its module with a ``start`` function; the
names here, the config sections and the systemd units already exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mailserver.app import App


class RunningDaemon(Protocol):
    async def stop(self) -> None: ...


DaemonStart = Callable[["App", Any], Awaitable[RunningDaemon]]

# serve name → "module:function". The order is the start order (stop goes in reverse).
DAEMONS = MappingProxyType({
    "maintenance": "mailserver.maintenance:start",
    "queue": "mailserver.servers.queue:start",
    "lmtp": "mailserver.servers.lmtp:start",
    "mx": "mailserver.servers.smtp:start_mx",
    "submission": "mailserver.servers.smtp:start_submission",
    "imap": "mailserver.servers.imap:start",
    "pop3": "mailserver.servers.pop3:start",
    "jmap": "mailserver.servers.jmap:start",
})


def resolve(name: str) -> DaemonStart | None:
    """The start function of daemon ``name``, or None while it is not implemented.

    Raises KeyError for a name that is not a daemon at all. An ImportError inside an existing
    daemon module (a bug or a missing dependency) propagates: it must not look like "absent".
    """
    module_name, _, attr = DAEMONS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            return None
        raise
    return getattr(module, attr, None)


def available() -> list[str]:
    """Names of the daemons that exist, in start order."""
    return [name for name in DAEMONS if resolve(name) is not None]
