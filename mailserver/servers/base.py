"""What every daemon shares: listeners, TLS, the PROXY protocol, connection limits, shutdown.

A daemon module builds a ``ListenerGroup`` from its config section and gives it one coroutine,
``handler(conn: Connection)``, that runs a whole session: it reads bytes with
``conn.read()``, feeds them to its sans-I/O state machine (``protocols/…``), writes the
machine's output with ``conn.write()``/``await conn.drain()``, calls ``await conn.start_tls()``
for STARTTLS, and returns when the session is over (the group closes the socket).

Decisions:

- **Implicit TLS** (993, 995, 465) is a listener flag: the group does the handshake before
  the handler runs, so the handler sees ``conn.tls == True`` from its first byte.
- **PROXY protocol** (v1 and v2, ``protocols/proxy``) is per listener and off by default. The
  header is read off the socket before anything else (before the TLS handshake on implicit
  TLS ports); ``conn.peer`` is then the client the header names. Such listeners run their own
  accept loop on the raw socket so that exactly the header is consumed and not one byte of a
  ClientHello behind it (asyncio's stream reader would buffer it away from the TLS layer).
  A malformed or missing header closes the connection: on a proxied port only the proxy may
  connect.
- **Limits**: ``limits.max_connections`` per daemon and ``limits.max_connections_per_ip``
  per client address. Over a limit the daemon's ``refuse(conn, why)`` coroutine gets to say
  so in its protocol (``-ERR``, ``* BYE``, ``421``) and the connection is closed.
- **Shutdown**: ``stop()`` closes the listeners (no new sessions), gives running sessions
  ``grace`` seconds to end on their own (a handler can watch ``conn.stopping``), then cancels
  them. No session is acknowledged anything it does not hold: every acknowledgement in the
  daemons comes after the commit, so cancelling a session can lose only unacknowledged work.
- TCP listeners set SO_REUSEPORT (where the OS has it), so several processes of one daemon
  can listen on the same port and the kernel spreads connections over them.
- A handler that raises is logged with its peer and the session closed; it never takes the
  listener or other sessions down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import stat
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mailserver.config import ListenAddress, parse_listen
from protocols import proxy

log = logging.getLogger("mailserver.servers")

READ_SIZE = 65536
# Several processes of one daemon may share a port (ARCHITECTURE: one process per core).
REUSE_PORT = hasattr(socket, "SO_REUSEPORT")
PROXY_HEADER_TIMEOUT = 10.0


def server_tls_context(tls_config: Any) -> ssl.SSLContext:
    """The server-side TLS context of ``[tls]``: certificate chain, key, minimum version."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if tls_config.min_version == "TLSv1.3"
                           else ssl.TLSVersion.TLSv1_2)
    ctx.load_cert_chain(tls_config.cert, tls_config.key)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


class Connection:
    """One client connection, as a session handler sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 peer: tuple[str, int] | None, local: tuple[str, int] | None,
                 listener: "Listener", tls_context: ssl.SSLContext | None,
                 stopping: asyncio.Event) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer  # (ip, port) of the client (the PROXY header's source when proxied)
        self.local = local
        self.listener = listener
        self.tls_context = tls_context
        self.stopping = stopping
        self.tls = False
        self.proxied = False
        self._corked: list[bytes] | None = None

    @property
    def peer_ip(self) -> str | None:
        return self.peer[0] if self.peer else None

    async def read(self, n: int = READ_SIZE) -> bytes:
        """Up to ``n`` bytes; b"" at end of stream or when the connection broke."""
        try:
            return await self.reader.read(n)
        except (ConnectionError, ssl.SSLError, OSError):
            return b""

    def write(self, data: bytes) -> None:
        if self._corked is not None:
            if data:
                self._corked.append(data)
        elif data and not self.writer.is_closing():
            self.writer.write(data)

    def cork(self) -> None:
        """Hold writes until ``flush``/``drain``, so that the replies to a batch of pipelined
        commands leave in one send (RFC 2920 §3.1) rather than one system call each."""
        if self._corked is None:
            self._corked = []

    def flush(self) -> None:
        """Send what ``cork`` held, and stop holding."""
        held, self._corked = self._corked, None
        if held:
            self.write(b"".join(held))

    async def drain(self) -> None:
        self.flush()
        try:
            await self.writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            pass

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    async def start_tls(self) -> None:
        """Upgrade to TLS (STARTTLS/STLS). Raises ``ConnectionError`` if the handshake fails."""
        if self.tls_context is None:
            raise ConnectionError("no TLS certificate configured")
        try:
            await self.writer.start_tls(self.tls_context)
        except (ssl.SSLError, OSError) as e:
            raise ConnectionError(f"TLS handshake failed: {e}") from e
        self.tls = True

    @property
    def tls_info(self) -> tuple[str, str] | None:
        """(protocol version, cipher name) once TLS is up."""
        obj = self.writer.get_extra_info("ssl_object")
        if obj is None:
            return None
        cipher = obj.cipher()
        return obj.version() or "", cipher[0] if cipher else ""

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass


@dataclass(frozen=True, slots=True)
class Listener:
    address: ListenAddress
    implicit_tls: bool = False
    proxy_protocol: bool = False

    def __str__(self) -> str:
        return f"{self.address}{' (TLS)' if self.implicit_tls else ''}" \
               f"{' (PROXY)' if self.proxy_protocol else ''}"


Handler = Callable[[Connection], Awaitable[None]]
Refuse = Callable[[Connection, str], Awaitable[None]]


def listeners_from(section: Any) -> list[Listener]:
    """``listen`` (plain/STARTTLS) and ``listen_tls`` (implicit TLS) of a daemon section."""
    out = [Listener(parse_listen(a), False, section.proxy_protocol) for a in section.listen]
    out += [Listener(parse_listen(a), True, section.proxy_protocol)
            for a in getattr(section, "listen_tls", ())]
    return out


class ListenerGroup:
    """The listeners and sessions of one daemon."""

    def __init__(self, name: str, listeners: list[Listener], handler: Handler, *,
                 tls_context: ssl.SSLContext | None, limits: Any,
                 refuse: Refuse | None = None, grace: float = 5.0) -> None:
        self.name = name
        self.listeners = listeners
        self.handler = handler
        self.refuse = refuse
        self.tls_context = tls_context
        self.max_connections = limits.max_connections
        self.max_per_ip = limits.max_connections_per_ip
        self.grace = grace
        self.stopping = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._accept_tasks: list[asyncio.Task[None]] = []
        self._raw_sockets: list[socket.socket] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._per_ip: Counter[str] = Counter()
        self.bound: list[tuple[Listener, Any]] = []  # (listener, sockname) once started

    # ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            for lst in self.listeners:
                if lst.implicit_tls and self.tls_context is None:
                    raise RuntimeError(f"{self.name}: listener {lst} needs a TLS certificate")
                await self._bind(lst)
        except BaseException:
            await self.stop()
            raise
        for lst, name in self.bound:
            log.info("%s listening on %s", self.name, _fmt_sockname(name, lst),
                     extra={"event": "listening", "daemon": self.name})

    async def _bind(self, lst: Listener) -> None:
        addr = lst.address
        if lst.proxy_protocol:
            sock = _make_socket(addr)
            sock.setblocking(False)
            self._raw_sockets.append(sock)
            self.bound.append((lst, sock.getsockname()))
            self._accept_tasks.append(asyncio.create_task(self._accept_loop(sock, lst)))
            return
        ssl_ctx = self.tls_context if lst.implicit_tls else None

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._session(reader, writer, lst, None)

        if addr.unix_path is not None:
            _remove_stale_socket(addr.unix_path)
            server = await asyncio.start_unix_server(on_connect, addr.unix_path, ssl=ssl_ctx,
                                                     limit=READ_SIZE)
            os.chmod(addr.unix_path, 0o660)
        else:
            server = await asyncio.start_server(on_connect, addr.host, addr.port, ssl=ssl_ctx,
                                                reuse_address=True, reuse_port=REUSE_PORT,
                                                limit=READ_SIZE,
                                                ssl_handshake_timeout=30 if ssl_ctx else None)
        self._servers.append(server)
        for s in server.sockets:
            self.bound.append((lst, s.getsockname()))

    async def _accept_loop(self, lsock: socket.socket, lst: Listener) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as e:  # EMFILE and friends: back off instead of spinning
                log.warning("%s: accept failed: %s", self.name, e)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._proxied(sock, lst))
            self._sessions.add(task)
            task.add_done_callback(self._sessions.discard)

    async def _proxied(self, sock: socket.socket, lst: Listener) -> None:
        loop = asyncio.get_running_loop()
        try:
            header = await asyncio.wait_for(_read_proxy_header(loop, sock), PROXY_HEADER_TIMEOUT)
        except (asyncio.TimeoutError, proxy.ProxyError, OSError, ConnectionError) as e:
            log.info("%s: bad or missing PROXY header: %s", self.name, e,
                     extra={"event": "proxy_error", "daemon": self.name})
            sock.close()
            return
        sock.setblocking(False)
        reader = asyncio.StreamReader(limit=READ_SIZE)
        # A server-side protocol (one with a connected callback): StreamWriter.start_tls picks
        # the handshake side from that, and without it STARTTLS on a proxied port would start
        # a *client* handshake. The protocol makes the writer in connection_made.
        writers: list[asyncio.StreamWriter] = []
        protocol = asyncio.StreamReaderProtocol(reader, lambda _r, w: writers.append(w))
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock,
                ssl=self.tls_context if lst.implicit_tls else None,
                ssl_handshake_timeout=30 if lst.implicit_tls else None)
        except (ssl.SSLError, OSError, ConnectionError) as e:
            log.info("%s: TLS handshake failed: %s", self.name, e)
            sock.close()
            return
        writer = writers[0] if writers else asyncio.StreamWriter(transport, protocol, reader, loop)
        peer = None
        if header.source is not None:
            peer = (header.source[0], header.source[1])
        await self._session(reader, writer, lst, peer, proxied=True)

    # ----------------------------------------------------------------------------------------
    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       lst: Listener, peer: tuple[str, int] | None, *,
                       proxied: bool = False) -> None:
        if peer is None:
            p = writer.get_extra_info("peername")
            peer = (p[0], p[1]) if isinstance(p, tuple) and len(p) >= 2 else None
        local = writer.get_extra_info("sockname")
        conn = Connection(reader, writer, peer=peer,
                          local=local if isinstance(local, tuple) else None,
                          listener=lst, tls_context=self.tls_context, stopping=self.stopping)
        conn.tls = lst.implicit_tls
        conn.proxied = proxied
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        ip = conn.peer_ip or "local"
        self._per_ip[ip] += 1
        try:
            why = None
            if self.stopping.is_set():
                why = "shutting down"
            elif len(self._sessions) > self.max_connections:
                why = "too many connections"
            elif ip != "local" and self._per_ip[ip] > self.max_per_ip:
                why = "too many connections from your address"
            if why is not None:
                log.info("%s: refused %s: %s", self.name, ip, why,
                         extra={"event": "connection_refused", "daemon": self.name,
                                "peer": ip, "reason": why})
                if self.refuse is not None:
                    try:
                        await asyncio.wait_for(self.refuse(conn, why), 5)
                    except Exception:
                        pass
                return
            await self.handler(conn)
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
        except Exception:
            log.exception("%s: session with %s failed", self.name, ip,
                          extra={"event": "session_error", "daemon": self.name, "peer": ip})
        finally:
            self._per_ip[ip] -= 1
            if self._per_ip[ip] <= 0:
                del self._per_ip[ip]
            self._sessions.discard(task)
            await conn.close()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    # ----------------------------------------------------------------------------------------
    async def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.close()
        for t in self._accept_tasks:
            t.cancel()
        for s in self._raw_sockets:
            s.close()
        for lst, _ in self.bound:
            if lst.address.unix_path is not None:
                _remove_stale_socket(lst.address.unix_path)
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=self.grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()


# --------------------------------------------------------------------------------------------

def _make_socket(addr: ListenAddress) -> socket.socket:
    if addr.unix_path is not None:
        _remove_stale_socket(addr.unix_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(addr.unix_path)
        os.chmod(addr.unix_path, 0o660)
    else:
        host = addr.host
        family = socket.AF_INET6 if host is None or ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if REUSE_PORT:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host or "::", addr.port))
    sock.listen(512)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed inside the PROXY header")
        buf += chunk
    return buf


async def _read_proxy_header(loop: asyncio.AbstractEventLoop,
                             sock: socket.socket) -> proxy.ProxyHeader:
    """Read exactly one PROXY header off ``sock`` and not one byte more."""
    sock.setblocking(False)
    data = b""
    while True:
        length = proxy.header_length(data)
        if length is proxy.NEED_DATA:
            # v1 ends at CRLF: read it a byte at a time (107 at most); v2 tells its length in
            # its 16 fixed octets
            v2 = data[:1] == proxy.V2_SIGNATURE[:1]
            data += await _recv_exactly(loop, sock, proxy.V2_FIXED - len(data) if v2 else 1)
            continue
        if length is None:
            raise proxy.ProxyError("not a PROXY protocol header")
        assert isinstance(length, int)
        if len(data) < length:
            data += await _recv_exactly(loop, sock, length - len(data))
        result = proxy.parse_header(data)
        if result is proxy.NEED_DATA:  # pragma: no cover - header_length said complete
            raise proxy.ProxyError("truncated PROXY header")
        header, consumed = result  # type: ignore[misc]
        assert consumed == len(data)
        return header


def _fmt_sockname(name: Any, lst: Listener) -> str:
    if isinstance(name, tuple):
        host = name[0]
        return f"{'[' + host + ']' if ':' in host else host}:{name[1]}" \
               f"{' (TLS)' if lst.implicit_tls else ''}{' (PROXY)' if lst.proxy_protocol else ''}"
    return str(lst)
