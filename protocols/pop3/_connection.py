"""The POP3 server state machine (RFC 1939, 2449, 2595, 3206, 5034, 6856), sans I/O.

The daemon is a thin loop around one ``Connection``::

    conn = Connection(config, tls=implicit_tls)
    write(conn.greeting())
    while True:
        conn.receive_data(await read())           # b"" on EOF
        while (event := conn.next_event()) is not NEED_DATA:
            match event:
                case Reply() | SaslCancelled():   write(event.reply)
                case StartTLS():                  write(event.reply); await upgrade(); conn.tls_started()
                case UserPass() | Apop():
                    # verify, lock the maildrop, snapshot it
                    write(conn.auth_succeeded(snapshot))   # or conn.auth_failed(ResponseCode.IN_USE)
                case SaslStart() | SaslResponse():
                    # mech = protocols.sasl.server_mechanism(event.mechanism) on SaslStart, then
                    # step = mech.step(event.initial / event.data): bytes → conn.sasl_challenge(step),
                    # Credentials → verify as above; SaslError → conn.auth_failed()
                case Retrieve():                  write(conn.send_message(await blob(event.uid)))
                case Update():                    write(conn.send_quit_result(await expunge(event.deleted_uids)))
                case Closed():                    return close()
        await drain()   # the inner loop answered every buffered (pipelined) command first

Replies come back strictly in command order (RFC 2449 §6.6 PIPELINING): while an event waits
for the daemon's answer, the machine reads no further command. ``has_pending_input`` says
whether another complete command is already buffered, for a daemon that wants to flush
before a slow await (fetching a large blob) only when nothing else is queued.

Deletion happens only on the ``Update`` event, i.e. after the client's QUIT in TRANSACTION
(RFC 1939 §6). A connection that drops, times out or is closed for too many errors — anything
that ends in ``Closed`` without an ``Update`` first — must delete nothing.

Client mistakes never raise: they become "-ERR" replies (and, past the configured limits, a
``Closed``). Daemon mistakes — calling an answer method out of turn, next_event() while an
answer is owed — raise ``LocalProtocolError``.
"""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Sequence

from . import _abnf, _writers as w
from ._config import PLAINTEXT_MECHANISMS, Pop3Config
from ._events import (
    NEED_DATA,
    Apop,
    Closed,
    Event,
    Reply,
    Retrieve,
    SaslCancelled,
    SaslResponse,
    SaslStart,
    StartTLS,
    Update,
    UserPass,
    _NeedData,
)
from ._readers import (
    TOO_LONG,
    LineReader,
    decode_text,
    parse_line_count,
    parse_msg_number,
    parse_params,
    split_command,
)
from ._state import ANSWERS, COMMANDS, KNOWN_COMMANDS, Awaiting, State
from ._writers import ResponseCode

_UNSET = object()


class LocalProtocolError(Exception):
    """The daemon used the Connection wrongly (never raised for anything the client sends)."""


def _decode_base64(data: bytes) -> bytes | None:
    if not _abnf.BASE64.fullmatch(data):
        return None
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        return None


class Connection:
    """One POP3 session, server side."""

    def __init__(
        self,
        config: Pop3Config | None = None,
        *,
        tls: bool = False,
        apop_timestamp: str | None = None,
    ) -> None:
        self.config = config or Pop3Config()
        self.state = State.AUTHORIZATION
        self.tls = tls
        self.utf8_enabled = False
        self.auth_failures = 0
        self.bad_commands = 0
        self.awaiting: Awaiting | None = None
        self.close_reason: str | None = None
        self._reader = LineReader()
        self._user: str | None = None  # USER given, PASS pending
        self._sasl = False  # an AUTH exchange is in progress
        self._sasl_expect_response = False  # a challenge went out; next line is the answer
        self._pending: Retrieve | None = None
        self._sizes: list[int] = []
        self._uids: list[str] = []
        self._deleted: set[int] = set()
        self._maildrop_open = False
        if apop_timestamp is None and self.config.apop:
            # RFC 1939 §7: unique per connection; the daemon may pass its own (pid.clock@host).
            apop_timestamp = f"<{secrets.token_hex(8)}@{self.config.hostname}>"
        if apop_timestamp is not None and not _abnf.APOP_TIMESTAMP.fullmatch(apop_timestamp):
            raise LocalProtocolError(f"APOP timestamp must look like <...>: {apop_timestamp!r}")
        self.apop_timestamp = apop_timestamp if self.config.apop else None

    # ------------------------------------------------------------------ input side

    def greeting(self) -> bytes:
        """The +OK banner (RFC 1939 §4), with the APOP timestamp when APOP is on."""
        text = self.config.greeting
        if self.apop_timestamp:
            text += " " + self.apop_timestamp
        return w.ok(text)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client; b"" means the client closed its side."""
        if self.state is State.CLOSED or self.awaiting is Awaiting.TLS:
            # RFC 2595 §4: anything before the TLS handshake completes is not trusted.
            if data:
                self._reader.dropped += len(data)
                return
        self._reader.feed(data)

    @property
    def has_pending_input(self) -> bool:
        """A complete command is buffered: keep processing before flushing writes."""
        return self.state is not State.CLOSED and self._reader.has_line()

    @property
    def dropped_octets(self) -> int:
        return self._reader.dropped

    def next_event(self) -> Event | _NeedData:
        if self.awaiting is not None:
            raise LocalProtocolError(
                f"answer the pending {self.awaiting.value} event first "
                f"({', '.join(sorted(ANSWERS[self.awaiting]))})"
            )
        if self.state is State.CLOSED:
            return Closed(self.close_reason or "quit")
        if self._sasl_expect_response:
            limit = self.config.max_sasl_line
        elif self._reader.startswith_ci(b"AUTH "):
            limit = self.config.max_sasl_line  # RFC 5034 §4: initial responses may be long
        else:
            limit = self.config.max_command_line
        line = self._reader.next_line(limit)
        if line is None:
            if self._reader.eof:
                return self._close("eof")
            return NEED_DATA
        if line is TOO_LONG:
            if self._sasl_expect_response:
                return self._sasl_abort("malformed", w.err("response too long"))
            return self._bad("", "line too long")
        assert isinstance(line, bytes)
        if self._sasl_expect_response:
            return self._sasl_line(line)
        parsed = split_command(line)
        if parsed is None:
            return self._bad("", "unknown command")
        keyword, args = parsed
        if keyword not in KNOWN_COMMANDS:
            return self._bad("", "unknown command")
        if keyword not in COMMANDS[self.state]:
            return self._bad(keyword, f"{keyword} not valid in the {self.state.value} state")
        return getattr(self, "_cmd_" + keyword.lower())(keyword, args)

    # ------------------------------------------------------------------ helpers

    def _close(self, reason: str) -> Closed:
        self.state = State.CLOSED
        self.close_reason = reason
        self._reader.clear()
        return Closed(reason)

    def _bad(self, command: str, text: str, code: ResponseCode | None = None) -> Reply:
        """A syntax/state error the client caused; too many of them end the session."""
        self.bad_commands += 1
        if self.bad_commands >= self.config.max_bad_commands:
            self._close("too-many-bad-commands")
            text += "; too many bad commands, closing connection"
        return Reply(command, w.err(text, code))

    def _expect(self, method: str) -> None:
        if self.awaiting is None or method not in ANSWERS[self.awaiting]:
            waiting = self.awaiting.value if self.awaiting else "nothing"
            raise LocalProtocolError(f"{method}() not expected now (waiting for {waiting})")

    def _plaintext_ok(self) -> bool:
        return self.tls or self.config.allow_plaintext_auth_without_tls

    def _count_auth_failure(self) -> bool:
        """Count one failed authentication; True when that was the last one allowed."""
        self.auth_failures += 1
        return self.auth_failures >= self.config.max_auth_failures

    # ------------------------------------------------------------------ AUTHORIZATION

    def _cmd_capa(self, kw: str, args: bytes) -> Reply:
        if args:
            return self._bad(kw, "CAPA takes no arguments")
        caps = w.capabilities(
            self.config,
            authorized=self.state is State.TRANSACTION,
            tls=self.tls,
        )
        return Reply(kw, w.multiline(w.ok("Capability list follows"), caps))

    def _cmd_quit(self, kw: str, args: bytes) -> Event:
        if args:
            return self._bad(kw, "QUIT takes no arguments")
        if self.state is State.AUTHORIZATION:
            # RFC 1939 §4: QUIT before login ends the session, nothing to update.
            self._close("quit")
            return Reply(kw, w.ok(f"{self.config.hostname} POP3 server signing off"))
        # RFC 1939 §6: enter UPDATE; the daemon removes the marked messages.
        self.state = State.UPDATE
        self.awaiting = Awaiting.QUIT_RESULT
        self._reader.clear()  # nothing after QUIT is read
        marked = sorted(self._deleted)
        return Update(tuple(marked), tuple(self._uids[i - 1] for i in marked))

    def _cmd_user(self, kw: str, args: bytes) -> Reply:
        if not self.config.user_pass:
            return self._bad(kw, "USER/PASS not supported, use AUTH")
        if not self._plaintext_ok():
            return self._bad(kw, "plaintext authentication requires TLS (use STLS)", ResponseCode.AUTH)
        params = parse_params(args)
        user = decode_text(params[0], self.utf8_enabled) if len(params) == 1 else None
        if user is None:
            self._user = None
            if len(params) == 1 and not self.utf8_enabled and not params[0].isascii():
                return self._bad(kw, "UTF-8 user names need the UTF8 command", ResponseCode.UTF8)
            return self._bad(kw, "usage: USER name")
        self._user = user
        # Same answer for every name: whether a mailbox exists is told after PASS only.
        return Reply(kw, w.ok("send PASS"))

    def _cmd_pass(self, kw: str, args: bytes) -> Event:
        if self._user is None:
            return self._bad(kw, "USER first")
        user, self._user = self._user, None
        # RFC 1939 §7: the argument is the rest of the line; spaces are part of the password.
        password = decode_text(args, self.utf8_enabled)
        if not password:
            return self._bad(kw, "usage: PASS password")
        self.awaiting = Awaiting.AUTH
        return UserPass(user, password)

    def _cmd_apop(self, kw: str, args: bytes) -> Event:
        if not self.apop_timestamp:
            return self._bad(kw, "APOP not supported")
        name, _, digest = args.rpartition(b" ")
        user = decode_text(name.strip(b" "), self.utf8_enabled)
        if not user or not _abnf.APOP_DIGEST.fullmatch(digest):
            return self._bad(kw, "usage: APOP name digest")
        self._user = None
        self.awaiting = Awaiting.AUTH
        return Apop(user, digest.decode("ascii").lower(), self.apop_timestamp)

    def _allowed_mechanisms(self) -> list[str]:
        plain = self._plaintext_ok()
        return [m for m in self.config.sasl_mechanisms if plain or m not in PLAINTEXT_MECHANISMS]

    def _cmd_auth(self, kw: str, args: bytes) -> Event:
        params = parse_params(args)
        if not params:
            # Pre-RFC 5034 clients (Outlook) send a bare AUTH to list the mechanisms.
            return Reply(kw, w.multiline(w.ok(), self._allowed_mechanisms()))
        if len(params) > 2 or not _abnf.SASL_MECH.fullmatch(params[0]):
            return self._bad(kw, "usage: AUTH mechanism [initial-response]")
        mechanism = params[0].decode("ascii").upper()
        if mechanism not in self.config.sasl_mechanisms:
            return self._bad(kw, f"mechanism {mechanism} not supported")
        if mechanism not in self._allowed_mechanisms():
            return self._bad(kw, "plaintext authentication requires TLS (use STLS)", ResponseCode.AUTH)
        initial: bytes | None = None
        if len(params) == 2:
            # RFC 5034 §4: "=" is an empty initial response.
            initial = b"" if params[1] == b"=" else _decode_base64(params[1])
            if initial is None:
                return self._bad(kw, "invalid base64 in initial response")
        self._user = None
        self._sasl = True
        self.awaiting = Awaiting.AUTH
        return SaslStart(mechanism, initial)

    def _sasl_line(self, line: bytes) -> Event:
        self._sasl_expect_response = False
        if line == b"*":  # RFC 5034 §4: the client cancels; we MUST answer -ERR
            return self._sasl_abort("cancelled", w.err("authentication cancelled"))
        data = _decode_base64(line)
        if data is None:
            return self._sasl_abort("malformed", w.err("invalid base64 in response"))
        self.awaiting = Awaiting.AUTH
        return SaslResponse(data)

    def _sasl_abort(self, reason: str, reply: bytes) -> SaslCancelled:
        self._sasl = False
        self._sasl_expect_response = False
        if self._count_auth_failure():
            self._close("too-many-auth-failures")
        return SaslCancelled(reply, reason)

    def _cmd_stls(self, kw: str, args: bytes) -> Event:
        if args:
            return self._bad(kw, "STLS takes no arguments")
        if self.tls:
            return self._bad(kw, "already using TLS")
        if not self.config.stls:
            return self._bad(kw, "STLS not supported")
        # RFC 2595 §4 / the STARTTLS command-injection class of bugs (CVE-2011-0411 and
        # kin): whatever the client pipelined after STLS was sent in clear; throw it away.
        self._reader.clear()
        self._user = None
        self.awaiting = Awaiting.TLS
        return StartTLS(w.ok("Begin TLS negotiation"))

    def _cmd_utf8(self, kw: str, args: bytes) -> Reply:
        if not self.config.utf8:
            return self._bad(kw, "UTF8 not supported")
        if args:
            return self._bad(kw, "UTF8 takes no arguments")
        self.utf8_enabled = True  # RFC 6856 §2
        return Reply(kw, w.ok("UTF8 enabled"))

    # ------------------------------------------------------------------ daemon answers: auth

    def open_maildrop(self, messages: Sequence[tuple[int, str]]) -> None:
        """The snapshot of the locked maildrop: (size in octets, unique id) for messages 1..n."""
        self._expect("open_maildrop")
        sizes, uids = [], []
        seen: set[str] = set()
        for size, uid in messages:
            if not isinstance(size, int) or size < 0:
                raise LocalProtocolError(f"bad message size {size!r}")
            if not _abnf.UNIQUE_ID.fullmatch(uid) or uid in seen:
                raise LocalProtocolError(f"bad or duplicate unique id {uid!r} (RFC 1939 §7)")
            seen.add(uid)
            sizes.append(size)
            uids.append(uid)
        self._sizes, self._uids, self._deleted = sizes, uids, set()
        self._maildrop_open = True

    def auth_succeeded(
        self, messages: Sequence[tuple[int, str]] | None = None, text: str | None = None
    ) -> bytes:
        """Credentials good and maildrop locked: enter TRANSACTION (RFC 1939 §4)."""
        self._expect("auth_succeeded")
        if messages is not None:
            self.open_maildrop(messages)
        if not self._maildrop_open:
            raise LocalProtocolError("open_maildrop() before auth_succeeded()")
        self.awaiting = None
        self._sasl = self._sasl_expect_response = False
        self.state = State.TRANSACTION
        count, octets = self._totals()
        return w.ok(text if text is not None else w.maildrop_summary(count, octets))

    def auth_failed(
        self, code: ResponseCode | None = ResponseCode.AUTH, text: str | None = None
    ) -> bytes:
        """Reject the login: [AUTH] bad credentials, [IN-USE] locked elsewhere, [SYS/TEMP],
        [LOGIN-DELAY], [UTF8]. Only [AUTH] (and no code) counts towards max_auth_failures."""
        self._expect("auth_failed")
        self.awaiting = None
        self._sasl = self._sasl_expect_response = False
        self._maildrop_open = False
        if text is None:
            text = {
                ResponseCode.IN_USE: "maildrop is locked by another session",
                ResponseCode.LOGIN_DELAY: "logged in too recently, try later",
                ResponseCode.SYS_TEMP: "temporary failure, try later",
                ResponseCode.SYS_PERM: "mailbox unavailable",
                ResponseCode.UTF8: "this mailbox needs the UTF8 command",
            }.get(code, "authentication failed")  # type: ignore[arg-type]
        if code in (ResponseCode.AUTH, None) and self._count_auth_failure():
            self._close("too-many-auth-failures")
            text += "; too many failures, closing connection"
        return w.err(text, code)

    def sasl_challenge(self, data: bytes) -> bytes:
        """Send a server challenge ("+ base64") and wait for the client's SaslResponse."""
        self._expect("sasl_challenge")
        if not self._sasl:
            raise LocalProtocolError("sasl_challenge() only during AUTH")
        self.awaiting = None
        self._sasl_expect_response = True
        return w.challenge(data)

    def tls_started(self) -> None:
        """TLS is up after StartTLS: a fresh AUTHORIZATION state (RFC 2595 §4)."""
        self._expect("tls_started")
        self.awaiting = None
        self.tls = True
        self._reader.clear()
        self._user = None
        self.utf8_enabled = False

    # ------------------------------------------------------------------ TRANSACTION

    def _totals(self) -> tuple[int, int]:
        live = [s for i, s in enumerate(self._sizes, 1) if i not in self._deleted]
        return len(live), sum(live)

    def _msg_arg(self, kw: str, param: bytes) -> int | Reply:
        """A live message number, or the -ERR reply (RFC 1939 §5: deleted ones don't count)."""
        n = parse_msg_number(param)
        if n is None:
            return self._bad(kw, "message number must be a positive integer")
        if not 1 <= n <= len(self._sizes):
            return Reply(
                kw, w.err(f"no such message, only {w.plural(len(self._sizes), 'message')} in maildrop")
            )
        if n in self._deleted:
            return Reply(kw, w.err(f"message {n} already deleted"))
        return n

    def _cmd_stat(self, kw: str, args: bytes) -> Reply:
        if args:
            return self._bad(kw, "STAT takes no arguments")
        count, octets = self._totals()
        return Reply(kw, w.ok(f"{count} {octets}"))

    def _listing(self, kw: str, args: bytes, values: Sequence[object], header: str) -> Reply:
        params = parse_params(args)
        if len(params) > 1:
            return self._bad(kw, f"usage: {kw} [msg]")
        if params:
            n = self._msg_arg(kw, params[0])
            if isinstance(n, Reply):
                return n
            return Reply(kw, w.ok(f"{n} {values[n - 1]}"))
        lines = (f"{i} {v}" for i, v in enumerate(values, 1) if i not in self._deleted)
        return Reply(kw, w.multiline(w.ok(header), lines))

    def _cmd_list(self, kw: str, args: bytes) -> Reply:
        count, octets = self._totals()
        header = f"{w.plural(count, 'message')} ({octets} octets)"
        return self._listing(kw, args, self._sizes, header)

    def _cmd_uidl(self, kw: str, args: bytes) -> Reply:
        return self._listing(kw, args, self._uids, "")

    def _cmd_noop(self, kw: str, args: bytes) -> Reply:
        if args:
            return self._bad(kw, "NOOP takes no arguments")
        return Reply(kw, w.ok())

    def _cmd_dele(self, kw: str, args: bytes) -> Reply:
        params = parse_params(args)
        if len(params) != 1:
            return self._bad(kw, "usage: DELE msg")
        n = self._msg_arg(kw, params[0])
        if isinstance(n, Reply):
            return n
        self._deleted.add(n)  # only marked; RFC 1939 §6: removed in UPDATE
        return Reply(kw, w.ok(f"message {n} deleted"))

    def _cmd_rset(self, kw: str, args: bytes) -> Reply:
        if args:
            return self._bad(kw, "RSET takes no arguments")
        self._deleted.clear()
        count, octets = self._totals()
        return Reply(kw, w.ok(w.maildrop_summary(count, octets)))

    def _cmd_retr(self, kw: str, args: bytes) -> Event:
        params = parse_params(args)
        if len(params) != 1:
            return self._bad(kw, "usage: RETR msg")
        return self._retrieve(kw, params[0], None)

    def _cmd_top(self, kw: str, args: bytes) -> Event:
        params = parse_params(args)
        lines = parse_line_count(params[1]) if len(params) == 2 else None
        if lines is None:
            return self._bad(kw, "usage: TOP msg n (n >= 0)")
        return self._retrieve(kw, params[0], lines)

    def _retrieve(self, kw: str, param: bytes, top_lines: int | None) -> Event:
        n = self._msg_arg(kw, param)
        if isinstance(n, Reply):
            return n
        self.awaiting = Awaiting.RETRIEVE
        self._pending = Retrieve(n, self._uids[n - 1], top_lines, self._sizes[n - 1])
        return self._pending

    # ------------------------------------------------------------------ daemon answers: mail

    def send_message(self, raw: bytes, top_lines: int | None | object = _UNSET) -> bytes:
        """The whole RETR/TOP response for the pending Retrieve: status line, the message
        (or its top) with CRLF endings and dot-stuffing, and the final ".CRLF"."""
        self._expect("send_message")
        assert self._pending is not None
        if top_lines is not _UNSET and top_lines != self._pending.top_lines:
            raise LocalProtocolError("top_lines differs from the pending Retrieve")
        pending, self._pending, self.awaiting = self._pending, None, None
        return w.message_response(raw, pending.top_lines)

    def retrieve_failed(
        self, code: ResponseCode | None = ResponseCode.SYS_TEMP, text: str = "message unavailable"
    ) -> bytes:
        """The daemon could not read the message (blob store down, expunged elsewhere)."""
        self._expect("retrieve_failed")
        self._pending, self.awaiting = None, None
        return w.err(text, code)

    def send_quit_result(self, ok: bool, text: str | None = None) -> bytes:
        """After Update: +OK when every marked message was removed, else -ERR (RFC 1939 §6)."""
        self._expect("send_quit_result")
        self.awaiting = None
        self._close("quit")
        if ok:
            left = len(self._sizes) - len(self._deleted)
            detail = "maildrop empty" if left == 0 else f"{w.plural(left, 'message')} left"
            return w.ok(text if text is not None else f"{self.config.hostname} POP3 server signing off ({detail})")
        return w.err(text or "some deleted messages not removed", ResponseCode.SYS_TEMP)

    # ------------------------------------------------------------------ introspection

    @property
    def message_count(self) -> int:
        return len(self._sizes)

    @property
    def deleted(self) -> frozenset[int]:
        return frozenset(self._deleted)
