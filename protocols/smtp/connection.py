"""``ServerConnection``: the server side of an ESMTP or LMTP session, without I/O.

The daemon feeds received bytes to ``receive_data`` and pulls events with ``next_event``.
A ``Command`` event waits for the daemon's decision (``send``/``accept``/``reject``); every
other event has already been answered by the machine. All replies, the machine's and the
daemon's, are queued in command order; ``send`` returns everything queued so far and
``data_to_send`` drains the rest. Because the machine reads the next pipelined command only
when asked for the next event, replies can never be reordered (RFC 2920 §3.1); flushing
when ``next_event`` returns ``NEED_DATA`` is exactly RFC 2920 §3.2's batching rule.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from . import _abnf
from ._commands import CommandError, parse_mail_params, parse_path, parse_rcpt_params, split_params
from ._config import ServerConfig
from ._events import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Answered,
    AuthCancelled,
    AuthRequest,
    AuthResponse,
    ChunkReceived,
    Command,
    ConnectionLost,
    DataStart,
    Ehlo,
    Event,
    Help,
    MailFrom,
    MessageComplete,
    Noop,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Rset,
    SmtpSentinel,
    StartTls,
    Vrfy,
)
from ._readers import LINE_TOO_LONG, ChunkReader, DataReader, LineReader, ReceiveBuffer
from ._state import State, out_of_sequence
from ._util import SmtpProtocolError
from ._writers import write_reply

_control_re = re.compile(r"[\x00-\x1f\x7f]")

# Replies the machine gives on its own.
R_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")  # RFC 5321 §4.5.3.1.4
R_AUTH_LINE_TOO_LONG = Reply(
    500, "5.5.6", "Authentication exchange line is too long"
)  # RFC 4954 §4
R_BARE_NEWLINE_CMD = Reply(500, "5.5.2", "Bare CR or LF in command line")  # RFC 5321 §2.3.8
R_UNKNOWN = Reply(500, "5.5.2", "Command not recognized")
R_BAD_UTF8 = Reply(500, "5.5.2", "Command is not valid UTF-8")
R_SYNTAX = Reply(500, "5.5.2", "Syntax error")
R_NO_ARGS = "Syntax: {} (no arguments)"
R_SIZE = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")  # RFC 1870 §6
R_BARE_NEWLINE_DATA = Reply(550, "5.5.2", "Bare CR or LF in message data (RFC 5321 section 2.3.8)")
R_DATA_LINE = Reply(
    550, "5.6.0", "Message line longer than 1000 octets (RFC 5321 section 4.5.3.1.6)"
)
R_TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
R_NEED_UTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.5
R_BINARYMIME_DATA = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")  # RFC 3030 §3
R_AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
R_AUTH_NEEDS_TLS = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
R_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64 response")  # RFC 4954 §4
R_REFUSED = Reply(503, "5.5.1", "No SMTP service here, only QUIT")  # RFC 5321 §3.1
R_VRFY_OFF = Reply(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery")
_NOT_COUNTED = (R_SIZE, R_TOO_MANY_RCPTS, R_NEED_UTF8, R_AUTH_REQUIRED, R_AUTH_NEEDS_TLS)


class ServerConnection:
    """One SMTP/LMTP session. See the module docstring for how a daemon drives it."""

    def __init__(self, config: ServerConfig, *, tls_active: bool = False) -> None:
        self.config = config
        self.state = State.GREETING
        self.tls_active = tls_active  # True from the start on an implicit-TLS port (RFC 8314)
        self.authenticated = False
        self.extended = False  # EHLO/LHLO rather than HELO
        self.helo_name: str | None = None
        self.errors = 0
        self._buf = ReceiveBuffer()
        self._line = LineReader()
        self._eof = False
        self._out: list[bytes] = []
        self._pending: Command | None = None
        self._mail: MailFrom | None = None
        self._rcpts: list[RcptTo] = []
        self._data: DataReader | None = None
        self._chunk: ChunkReader | None = None
        self._chunk_last = False
        self._chunk_error: Reply | None = None
        self._chunk_return = State.GREETED
        self._bdat_parts: list[bytes] = []
        self._bdat_size = 0

    # --- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means end of file."""
        if self.state is State.CLOSED:
            return
        if not data:
            self._eof = True
        elif self.state is not State.TLS_HANDSHAKE:
            # RFC 3207 §4.2: plaintext after an accepted STARTTLS is never a command.
            self._buf.append(data)

    @property
    def has_pending_input(self) -> bool:
        """Unprocessed bytes are buffered: more replies may follow before a flush is needed."""
        return self.state is not State.CLOSED and len(self._buf) > 0

    @property
    def awaiting_reply(self) -> Command | None:
        return self._pending

    @property
    def mail_from(self) -> MailFrom | None:
        return self._mail

    @property
    def recipients(self) -> tuple[RcptTo, ...]:
        return tuple(self._rcpts)

    def next_event(self) -> Event | SmtpSentinel:
        if self._pending is not None:
            raise SmtpProtocolError(f"answer {type(self._pending).__name__} before the next event")
        if self.state is State.GREETING:
            raise SmtpProtocolError("send the greeting first")
        while True:
            state = self.state
            if state is State.CLOSED:
                return CLOSED
            if state is State.TLS_HANDSHAKE:
                return PAUSED
            if state is State.DATA:
                event = self._read_data()
            elif state is State.BDAT:
                event = self._read_chunk()
            else:
                event = self._read_command()
            if event is NEED_DATA:
                if self._eof:
                    return self._lost(state)
                return NEED_DATA
            if event is not None:
                if isinstance(event, Command):
                    self._pending = event
                return event

    # --- output ----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def greet(self, text: str | None = None) -> bytes:
        """The 220 banner (RFC 5321 §4.2: no enhanced code on the greeting)."""
        kind = "LMTP" if self.config.lmtp else "ESMTP"
        return self.send(Reply(220, None, text or f"{self.config.hostname} {kind} ready"))

    def send(self, reply: Reply) -> bytes:
        """Answer the waiting command (or send the banner); returns all queued bytes.

        421 may answer anything and closes the session (RFC 5321 §3.8). In LMTP, a single
        reply to ``MessageComplete`` is repeated for every recipient.
        """
        if self.state is State.GREETING:
            if reply.code not in (220, 421, 554):
                raise SmtpProtocolError("the greeting must be 220, 421 or 554")
            self._queue(reply)
            self.state = {220: State.CONNECTED, 554: State.REFUSED, 421: State.CLOSED}[reply.code]
            return self.data_to_send()
        event = self._pending
        if event is None:
            raise SmtpProtocolError("no command is waiting for a reply")
        code = reply.code
        if code == 421:
            self._queue(reply)
            self._pending = None
            self._close()
            return self.data_to_send()
        if isinstance(event, (AuthRequest, AuthResponse)):
            if code not in (235, 334) and code < 400:
                raise SmtpProtocolError(f"{code} is not an answer to AUTH")
        elif isinstance(event, StartTls):
            if code != 220 and code < 400:
                raise SmtpProtocolError(f"{code} is not an answer to STARTTLS")
        elif not (200 <= code < 300 or code >= 400):
            raise SmtpProtocolError(f"{code} is not an answer to {type(event).__name__}")
        if isinstance(event, MessageComplete) and self.config.lmtp:
            return self.send_lmtp_replies([reply] * len(event.recipients))
        self._queue(reply)
        self._pending = None
        self._apply(event, reply)
        return self.data_to_send()

    def accept(self, text: str | None = None) -> bytes:
        """The usual positive reply to the waiting command."""
        event = self._pending
        if isinstance(event, Ehlo):
            return self.send(self._ehlo_reply(event))
        if isinstance(event, MailFrom):
            return self.send(Reply(250, "2.1.0", text or "OK"))
        if isinstance(event, RcptTo):
            return self.send(Reply(250, "2.1.5", text or "OK"))
        if isinstance(event, MessageComplete):
            if self.config.lmtp:
                return self.send_lmtp_replies(
                    [
                        Reply(250, "2.0.0", text or f"<{r.address}> delivered")
                        for r in event.recipients
                    ]
                )
            return self.send(Reply(250, "2.0.0", text or "OK"))
        if isinstance(event, StartTls):
            return self.send(Reply(220, "2.0.0", text or "Ready to start TLS"))
        if isinstance(event, (AuthRequest, AuthResponse)):
            return self.send(Reply(235, "2.7.0", text or "Authentication successful"))
        if isinstance(event, Vrfy):
            return self.send(Reply(250, "2.1.5", text or event.argument))
        raise SmtpProtocolError("no command is waiting for a reply")

    def reject(self, code: int, enhanced: str, text: str | tuple[str, ...]) -> bytes:
        if code < 400:
            raise SmtpProtocolError("reject needs a 4xx or 5xx code")
        return self.send(Reply(code, enhanced, text))

    def auth_challenge(self, challenge: bytes) -> bytes:
        """334 with the base64 challenge; the client's answer arrives as ``AuthResponse``."""
        if not isinstance(self._pending, (AuthRequest, AuthResponse)):
            raise SmtpProtocolError("no AUTH exchange is waiting")
        return self.send(Reply(334, None, base64.b64encode(challenge).decode("ascii")))

    def send_lmtp_replies(self, replies: Sequence[Reply]) -> bytes:
        """RFC 2033 §4.2: after the data, one reply per accepted recipient, in RCPT order."""
        event = self._pending
        if not (self.config.lmtp and isinstance(event, MessageComplete)):
            raise SmtpProtocolError("LMTP replies answer MessageComplete in LMTP mode only")
        if len(replies) != len(event.recipients):
            raise SmtpProtocolError(f"need {len(event.recipients)} replies, got {len(replies)}")
        if any(not (200 <= r.code < 300 or r.code >= 400) for r in replies):
            raise SmtpProtocolError("LMTP data replies must be 2xx, 4xx or 5xx")
        for r in replies:
            self._queue(r)
        self._pending = None
        self._end_transaction()
        return self.data_to_send()

    def tls_started(self) -> None:
        """The daemon finished the TLS handshake after a 220 to STARTTLS.

        RFC 3207 §4.2: forget everything learnt before TLS (EHLO name, AUTH, transaction);
        the client must EHLO again. Anything buffered was plaintext and is dropped.
        """
        if self.state is not State.TLS_HANDSHAKE:
            raise SmtpProtocolError("tls_started() only after accepting STARTTLS")
        self.tls_active = True
        self.authenticated = False
        self.extended = False
        self.helo_name = None
        self._reset_transaction()
        self._buf.clear()
        self._line = LineReader()
        self.state = State.CONNECTED

    def close(self, reply: Reply | None = None) -> bytes:
        """Daemon-side end of session (timeout, shutdown): 421 by default (RFC 5321 §3.8)."""
        if self.state is not State.CLOSED:
            self._queue(
                reply or Reply(421, "4.3.2", f"{self.config.hostname} Service shutting down")
            )
            self._pending = None
            self._close()
        return self.data_to_send()

    @property
    def extensions(self) -> list[str]:
        """EHLO keywords as announced right now (depend on TLS state)."""
        c = self.config
        ext = []
        if c.pipelining or c.lmtp:  # RFC 2033 §4.1: LMTP servers must pipeline
            ext.append("PIPELINING")
        ext.append(f"SIZE {c.max_message_size}")
        if c.eightbitmime:
            ext.append("8BITMIME")
        if c.smtputf8:
            ext.append("SMTPUTF8")
        ext.append("ENHANCEDSTATUSCODES")
        if c.chunking:
            ext.append("CHUNKING")
        if c.binarymime:
            ext.append("BINARYMIME")
        if c.dsn:
            ext.append("DSN")
        if c.starttls and not self.tls_active:
            ext.append("STARTTLS")
        if self._auth_offered():
            ext.append("AUTH " + " ".join(m.upper() for m in c.auth_mechanisms))
        if c.requiretls and self.tls_active:  # RFC 8689 §4: only over TLS
            ext.append("REQUIRETLS")
        return ext

    # --- internals: output and state -------------------------------------------------------

    def _queue(self, reply: Reply) -> None:
        self._out.append(write_reply(reply))

    def _close(self) -> None:
        self.state = State.CLOSED
        self._buf.clear()
        self._reset_transaction()

    def _lost(self, state: State) -> ConnectionLost:
        self._close()
        return ConnectionLost(during=state.value)

    def _session_state(self) -> State:
        return State.GREETED if self.helo_name is not None else State.CONNECTED

    def _reset_transaction(self) -> None:
        self._mail = None
        self._rcpts = []
        self._data = None
        self._chunk = None
        self._bdat_parts = []
        self._bdat_size = 0

    def _end_transaction(self) -> None:
        self._reset_transaction()
        if self.state is not State.CLOSED:
            self.state = self._session_state()

    def _auth_offered(self) -> bool:
        c = self.config
        return bool(c.auth_mechanisms) and (self.tls_active or not c.auth_requires_tls)

    def _error(
        self, reply: Reply, command: str, *, copies: int = 1, count: bool = True
    ) -> ProtocolError:
        """Queue a reply the machine decided on; too many errors turn it into 421."""
        if count:
            self.errors += 1
            if self.errors >= self.config.max_errors:
                reply = Reply(
                    421, "4.7.0", f"{self.config.hostname} Too many errors, closing connection"
                )
                copies = 1
                self._close()
        for _ in range(copies):
            self._queue(reply)
        return ProtocolError(reply, command)

    def _apply(self, event: Command, reply: Reply) -> None:
        """State change once the daemon has answered ``event`` with ``reply``."""
        ok = 200 <= reply.code < 300
        if isinstance(event, Ehlo):
            if ok:
                self.helo_name = event.name
                self.extended = event.extended
                self.state = State.GREETED
        elif isinstance(event, MailFrom):
            if ok:
                self._mail = event
                self.state = State.MAIL
        elif isinstance(event, RcptTo):
            if ok:
                self._rcpts.append(event)
                self.state = State.RCPT
        elif isinstance(event, MessageComplete):
            self._end_transaction()
        elif isinstance(event, StartTls):
            if reply.code == 220:
                self.state = State.TLS_HANDSHAKE
                self._buf.clear()
        elif isinstance(event, (AuthRequest, AuthResponse)):
            if reply.code == 334:
                self.state = State.AUTH
            else:
                self.authenticated = reply.code == 235
                self.state = self._session_state()

    def _ehlo_reply(self, event: Ehlo) -> Reply:
        # RFC 2034 §3: no enhanced codes on the EHLO/HELO response.
        first = f"{self.config.hostname} greets {event.name[:64]}"
        if not event.extended:
            return Reply(250, None, first)
        return Reply(250, None, (first, *self.extensions))

    # --- internals: commands ---------------------------------------------------------------

    def _read_command(self) -> Event | SmtpSentinel | None:
        line = self._line.read(self._buf, self.config.max_auth_line_length)
        if line is None:
            return NEED_DATA
        if self.state is State.AUTH:
            return self._auth_line(line)
        if line is LINE_TOO_LONG:
            return self._error(R_LINE_TOO_LONG, "LINE")
        assert isinstance(line, bytes)
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            return self._error(R_BARE_NEWLINE_CMD, "LINE")
        try:
            text = line[:-2].decode("utf-8")
        except UnicodeDecodeError:
            return self._error(R_BAD_UTF8, "LINE")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        if len(line) > self.config.max_line_length and verb != "AUTH":
            return self._error(R_LINE_TOO_LONG, verb if verb in _HANDLERS else "LINE")
        if _control_re.search(text):
            return self._error(R_SYNTAX, verb if verb in _HANDLERS else "LINE")
        if self.state is State.REFUSED:
            if verb == "QUIT":
                return self._quit(arg)
            return self._error(R_REFUSED, verb if verb in _HANDLERS else "LINE")
        handler = _HANDLERS.get(verb)
        if self.config.lmtp and verb in ("EHLO", "HELO"):  # RFC 2033 §4.1
            return self._error(Reply(500, "5.5.1", "This is LMTP: use LHLO"), verb)
        if verb == "LHLO" and not self.config.lmtp:
            handler = None
        if handler is None:
            return self._error(R_UNKNOWN, "LINE")
        if verb != "BDAT":  # BDAT checks its sequence after learning how many octets follow
            refusal = out_of_sequence(verb, self.state, self.config.lmtp)
            if refusal is not None:
                return self._error(refusal, verb)
        try:
            return handler(self, arg)
        except CommandError as e:
            # Policy limits a well-behaved client can hit are not counted as its errors.
            return self._error(e.reply, verb, count=e.reply not in _NOT_COUNTED)

    def _no_args(self, verb: str, arg: str) -> None:
        if arg.strip(" "):
            raise CommandError(Reply(501, "5.5.4", R_NO_ARGS.format(verb)))

    def _hello(self, verb: str, arg: str) -> Ehlo:
        name = arg.strip(" ")
        if not name:
            raise CommandError(Reply(501, "5.5.4", f"Syntax: {verb} hostname"))
        # RFC 5321 §4.1.4: a new EHLO ends any transaction, like RSET.
        self._reset_transaction()
        self.helo_name = None
        self.extended = False
        self.state = State.CONNECTED
        m = _abnf.helo_name_re.fullmatch(name)
        valid = m is not None and (not name.startswith("[") or _abnf.valid_address_literal(name))
        return Ehlo(name, extended=verb != "HELO", lmtp=verb == "LHLO", valid_name=valid)

    def _ehlo(self, arg: str) -> Ehlo:
        return self._hello("EHLO", arg)

    def _helo(self, arg: str) -> Ehlo:
        return self._hello("HELO", arg)

    def _lhlo(self, arg: str) -> Ehlo:
        return self._hello("LHLO", arg)

    def _mail_cmd(self, arg: str) -> MailFrom:
        if self.config.auth_required and not self.authenticated:
            raise CommandError(R_AUTH_REQUIRED)
        m = _abnf.from_re.match(arg)
        if m is None:
            raise CommandError(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
        address, rest = parse_path(
            arg[m.end() :],
            null_ok=True,
            postmaster_ok=False,
            bad=Reply(501, "5.1.7", "Bad sender address syntax"),
        )
        params = parse_mail_params(
            split_params(rest),
            self.config,
            extended=self.extended,
            tls=self.tls_active,
            auth_offered=self._auth_offered(),
        )
        if params.size is not None and params.size > self.config.max_message_size:
            raise CommandError(R_SIZE)
        if not address.isascii() and not params.smtputf8:
            raise CommandError(R_NEED_UTF8)
        return MailFrom(address, params)

    def _rcpt_cmd(self, arg: str) -> RcptTo:
        m = _abnf.to_re.match(arg)
        if m is None:
            raise CommandError(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
        address, rest = parse_path(
            arg[m.end() :],
            null_ok=False,
            postmaster_ok=True,
            bad=Reply(501, "5.1.3", "Bad recipient address syntax"),
        )
        params = parse_rcpt_params(split_params(rest), self.config, extended=self.extended)
        assert self._mail is not None
        if not address.isascii() and not self._mail.params.smtputf8:
            raise CommandError(R_NEED_UTF8)
        if len(self._rcpts) >= self.config.max_recipients:
            raise CommandError(R_TOO_MANY_RCPTS)
        return RcptTo(address, params)

    def _data_cmd(self, arg: str) -> DataStart:
        self._no_args("DATA", arg)
        assert self._mail is not None
        if self._mail.params.body == "BINARYMIME":
            raise CommandError(R_BINARYMIME_DATA)
        self.state = State.DATA
        self._data = DataReader(self.config.max_message_size, self.config.max_text_line_length)
        self._queue(Reply(354, None, "End data with <CR><LF>.<CR><LF>"))
        return DataStart()

    def _bdat_cmd(self, arg: str) -> Event | SmtpSentinel | None:
        m = _abnf.bdat_re.fullmatch(arg)
        if m is None:
            # Without a size we cannot know how many octets follow; they will be read as
            # commands and fail, and max_errors ends the session if it goes on.
            raise CommandError(Reply(501, "5.5.4", "Syntax: BDAT size [LAST]"))
        size, last = int(m.group("size")), m.group("last") is not None
        error: Reply | None = None
        if not self.config.chunking:
            error = Reply(502, "5.5.1", "CHUNKING not available")
        else:
            error = out_of_sequence("BDAT", self.state, self.config.lmtp)
        if error is None and self._bdat_size + size > self.config.max_message_size:
            error = R_SIZE
        # RFC 3030 §2: the chunk follows the command unasked, so it is read even when the
        # command is refused, and the reply comes after it.
        self._chunk = ChunkReader(size, keep=error is None)
        self._chunk_last = last
        self._chunk_error = error
        self._chunk_return = self.state
        self.state = State.BDAT
        return self._read_chunk()

    def _read_chunk(self) -> Event | SmtpSentinel:
        chunk = self._chunk
        assert chunk is not None
        if not chunk.feed(self._buf):
            return NEED_DATA
        self._chunk = None
        error = self._chunk_error
        if error is not None:
            self.state = self._chunk_return
            copies = 1
            if error is R_SIZE:
                if self._chunk_last and self.config.lmtp:
                    copies = len(self._rcpts)
                self._end_transaction()
            return self._error(error, "BDAT", copies=copies, count=error is not R_SIZE)
        self._bdat_parts.extend(chunk.parts)
        self._bdat_size += sum(map(len, chunk.parts))
        if not self._chunk_last:
            self.state = State.CHUNKING
            self._queue(Reply(250, "2.0.0", f"{sum(map(len, chunk.parts))} octets received"))
            return ChunkReceived(sum(map(len, chunk.parts)))
        assert self._mail is not None
        data = b"".join(self._bdat_parts)
        self._bdat_parts = []
        self.state = State.RCPT
        return MessageComplete(data, self._mail, tuple(self._rcpts), chunked=True)

    def _read_data(self) -> Event | SmtpSentinel:
        reader = self._data
        assert reader is not None
        if not reader.feed(self._buf):
            return NEED_DATA
        self._data = None
        self.state = State.RCPT
        assert self._mail is not None
        if reader.too_big:
            error = R_SIZE
        elif reader.bare_newline:
            error = R_BARE_NEWLINE_DATA
        elif reader.line_too_long:
            error = R_DATA_LINE
        else:
            return MessageComplete(reader.data(), self._mail, tuple(self._rcpts))
        copies = len(self._rcpts) if self.config.lmtp else 1  # RFC 2033 §4.2
        self._end_transaction()
        return self._error(error, "DATA", copies=copies, count=error is not R_SIZE)

    def _rset_cmd(self, arg: str) -> Rset:
        self._no_args("RSET", arg)
        self._end_transaction()
        self._queue(Reply(250, "2.0.0", "OK"))
        return Rset()

    def _noop_cmd(self, arg: str) -> Noop:
        self._queue(Reply(250, "2.0.0", "OK"))
        return Noop()

    def _help_cmd(self, arg: str) -> Help:
        self._queue(Reply(214, "2.0.0", self.config.help_text))
        return Help()

    def _quit(self, arg: str) -> Quit:
        self._no_args("QUIT", arg)
        self._queue(Reply(221, "2.0.0", f"{self.config.hostname} closing connection"))
        self._close()
        return Quit()

    def _vrfy_cmd(self, arg: str) -> Event:
        if not arg.strip(" "):
            raise CommandError(Reply(501, "5.5.4", "Syntax: VRFY address"))
        if not self.config.vrfy_enabled:
            self._queue(R_VRFY_OFF)
            return Answered(R_VRFY_OFF, "VRFY")
        return Vrfy(arg.strip(" "))

    def _expn_cmd(self, arg: str) -> Event:
        raise CommandError(Reply(502, "5.5.1", "EXPN not available"))

    def _starttls_cmd(self, arg: str) -> StartTls:
        self._no_args("STARTTLS", arg)
        if not self.config.starttls:
            raise CommandError(Reply(502, "5.5.1", "STARTTLS not available"))
        if self.tls_active:
            raise CommandError(Reply(503, "5.5.1", "TLS already active"))
        # RFC 3207 §4.2: anything pipelined after STARTTLS is plaintext injected before
        # the handshake; it must not be executed afterwards.
        return StartTls(discarded=self._buf.clear())

    def _auth_cmd(self, arg: str) -> AuthRequest:
        c = self.config
        if not c.auth_mechanisms:
            raise CommandError(Reply(502, "5.5.1", "AUTH not available"))
        if self.authenticated:
            raise CommandError(Reply(503, "5.5.1", "Already authenticated"))  # RFC 4954 §4
        mechanism, _, initial = arg.strip(" ").partition(" ")
        if not _abnf.sasl_mech_re.fullmatch(mechanism) or " " in initial.strip(" "):
            raise CommandError(Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
        mechanism = mechanism.upper()
        if mechanism not in {m.upper() for m in c.auth_mechanisms}:
            raise CommandError(Reply(504, "5.5.4", "Unrecognized authentication type"))
        if not self._auth_offered():
            raise CommandError(R_AUTH_NEEDS_TLS)
        initial = initial.strip(" ")
        response: bytes | None
        if not initial:
            response = None
        elif initial == "=":  # RFC 4954 §4: empty initial response
            response = b""
        else:
            response = _b64decode(initial)
        return AuthRequest(mechanism, response)

    def _auth_line(self, line: bytes | object) -> Event:
        # A client line inside a SASL exchange (RFC 4954 §4).
        self.state = self._session_state()
        if line is LINE_TOO_LONG:
            return self._error(R_AUTH_LINE_TOO_LONG, "AUTH")
        assert isinstance(line, bytes)
        if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
            return self._error(R_BARE_NEWLINE_CMD, "AUTH")
        text = line[:-2]
        if text == b"*":
            self._queue(Reply(501, "5.0.0", "Authentication cancelled"))
            return AuthCancelled()
        try:
            data = _b64decode(text.decode("ascii"))
        except (CommandError, UnicodeDecodeError):
            return self._error(R_BAD_BASE64, "AUTH")
        return AuthResponse(data)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError(R_BAD_BASE64) from None


_HANDLERS = {
    "EHLO": ServerConnection._ehlo,
    "HELO": ServerConnection._helo,
    "LHLO": ServerConnection._lhlo,
    "MAIL": ServerConnection._mail_cmd,
    "RCPT": ServerConnection._rcpt_cmd,
    "DATA": ServerConnection._data_cmd,
    "BDAT": ServerConnection._bdat_cmd,
    "RSET": ServerConnection._rset_cmd,
    "NOOP": ServerConnection._noop_cmd,
    "HELP": ServerConnection._help_cmd,
    "QUIT": ServerConnection._quit,
    "VRFY": ServerConnection._vrfy_cmd,
    "EXPN": ServerConnection._expn_cmd,
    "STARTTLS": ServerConnection._starttls_cmd,
    "AUTH": ServerConnection._auth_cmd,
}
