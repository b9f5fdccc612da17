"""systemd integration without a dependency: sd_notify(3) messages and socket activation.

``notify("READY=1")`` sends a datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace); without that variable it does nothing, so the same code runs under
systemd, in a terminal and in tests. ``watchdog_interval()`` is how often to send
``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, when the watchdog is meant for this process.
``listen_fds()`` returns sockets passed by socket activation (``LISTEN_FDS``, sd_listen_fds(3)).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

SD_LISTEN_FDS_START = 3


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=…"``); True when it was sent.

    A notify socket that is set but gone (the receiver exited) is not our failure: like
    sd_notify(3), report it and carry on.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when no watchdog is set for us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 / 2 if value > 0 else None


def listen_fds(environ: Mapping[str, str] | None = None) -> dict[str, list[socket.socket]]:
    """Sockets handed over by systemd socket activation, by ``FileDescriptorName=``.

    Unnamed sockets are listed under ``"unknown"`` (systemd's own default name).
    """
    env = os.environ if environ is None else environ
    pid = env.get("LISTEN_PID")
    if not pid or not pid.isdigit() or int(pid) != os.getpid():
        return {}
    try:
        count = int(env.get("LISTEN_FDS", "0"))
    except ValueError:
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    out: dict[str, list[socket.socket]] = {}
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        name = names[i] if i < len(names) and names[i] else "unknown"
        out.setdefault(name, []).append(socket.socket(fileno=fd))
    return out
