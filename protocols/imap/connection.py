"""``ServerConnection``: IMAP framing (lines, literals, limits, IDLE/AUTHENTICATE modes).

Bytes go in with ``receive_data``; ``next_event`` returns one event at a time, parsing
lazily so that a mode switch the daemon makes after an event (``start_idle``,
``start_authenticate``, ``start_tls``) applies to the bytes that follow it.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass

from protocols.imap import _abnf, _events as ev
from protocols.imap._readers import ImapParseError, parse_command, read_command_name, read_tag
from protocols.imap._state import ALLOWED_STATES, State


class ImapProtocolError(Exception):
    """The daemon drove the connection wrongly (e.g. next_event before deciding a literal)."""


@dataclass(frozen=True, slots=True)
class ImapConfig:
    max_line: int = 64 * 1024  # command text, literals excluded
    max_literal: int = 64 * 1024 * 1024  # one literal (an APPEND message)
    max_command_literals: int = 256 * 1024 * 1024  # all literals of one command (MULTIAPPEND)
    literal_plus: bool = True  # RFC 7888 LITERAL+ (else LITERAL- when literal_minus)
    literal_minus: bool = False  # RFC 7888 §5: {n+} only up to 4096 octets
    max_search_depth: int = 32
    check_state: bool = True  # refuse commands not valid in conn.state
    continuation_text: str = "Ready for literal data"


LITERAL_MINUS_MAX = 4096  # RFC 7888 §5


class Mode(enum.Enum):
    COMMAND = "command"
    IDLE = "idle"
    AUTHENTICATE = "authenticate"


class ServerConnection:
    def __init__(
        self, config: ImapConfig | None = None, state: State = State.NOT_AUTHENTICATED
    ) -> None:
        self.config = config or ImapConfig()
        self.state = state  # the daemon updates this after LOGIN / SELECT / CLOSE ...
        self.utf8_enabled = False  # ENABLE UTF8=ACCEPT or IMAP4rev2 (RFC 9051 §6.3.1)
        self.mode = Mode.COMMAND
        self.closed = False
        self._buf = bytearray()
        self._scan_from = 0
        self._mode_tag = ""
        self._reset_command()
        self._discarding = False
        self._discard_tail = b""
        self._pending: ev.Event | None = None

    # ---- input ------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if not self.closed:
            self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """Remove and return unread bytes (e.g. already-compressed input after COMPRESS)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scan_from = 0
        return data

    # ---- mode switches ----------------------------------------------------------------------
    def start_idle(self, tag: str) -> None:
        """After answering IDLE with ``+ idling``: the next line must be DONE (RFC 2177)."""
        self.mode = Mode.IDLE
        self._mode_tag = tag

    def start_authenticate(self, tag: str) -> None:
        """After a ``+`` challenge: lines are base64 SASL responses or ``*`` (RFC 9051 §6.2.2)."""
        self.mode = Mode.AUTHENTICATE
        self._mode_tag = tag

    def end_authenticate(self) -> None:
        self.mode = Mode.COMMAND

    def start_tls(self) -> int:
        """Call after answering STARTTLS OK: drops plaintext the client pipelined behind it
        (RFC 9051 §6.2.1, command injection) and returns how many bytes were dropped."""
        dropped = len(self._buf)
        self._buf.clear()
        self._scan_from = 0
        return dropped

    # ---- literals -----------------------------------------------------------------------------
    def accept_literal(self) -> bytes:
        if not self._awaiting_decision:
            raise ImapProtocolError("no literal is waiting for a decision")
        self._awaiting_decision = False
        return b"+ " + self.config.continuation_text.encode("ascii") + b"\r\n"

    def reject_literal(
        self, text: str = "Literal too big", code: str | None = "TOOBIG", status: str = "NO"
    ) -> bytes:
        """Refuse a synchronizing literal: the client will not send it (RFC 9051 §7.1)."""
        if not self._awaiting_decision:
            raise ImapProtocolError("no literal is waiting for a decision")
        from protocols.imap import responses

        tag = read_tag(bytes(self._text)) or "*"
        self._reset_command()
        return responses.status_response(tag, status, text, code)

    # ---- events -------------------------------------------------------------------------------
    def next_event(self):
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        if self.closed:
            return ev.NEED_DATA
        if self._awaiting_decision:
            raise ImapProtocolError("call accept_literal() or reject_literal() first")
        if self.mode is Mode.IDLE:
            return self._next_idle()
        if self.mode is Mode.AUTHENTICATE:
            return self._next_sasl()
        while True:
            if self._literal_needed is not None:
                size, binary = self._literal_needed
                if len(self._buf) < size:
                    return ev.NEED_DATA
                self._literals[len(self._text)] = (bytes(self._buf[:size]), binary)
                del self._buf[:size]
                self._literal_needed = None
                self._scan_from = 0
            if self._discarding:
                event = self._discard()
                if event is not None:
                    return event
                continue
            line = self._take_line(self.config.max_line - len(self._text))
            if line is None:
                return ev.NEED_DATA
            if isinstance(line, _TooLong):
                return self._too_long(line, "Command line too long")
            if not self._text and not line:
                continue  # tolerate empty lines between commands
            self._text += line
            m = _abnf.literal_at_end.search(line)
            if m is None:
                return self._finish_command()
            event = self._announce_literal(int(m.group(2)), bool(m.group(1)), bool(m.group(3)))
            if event is not None:
                return event

    # ---- internals ----------------------------------------------------------------------------
    def _reset_command(self) -> None:
        self._text = bytearray()
        self._literals: dict[int, tuple[bytes, bool]] = {}
        self._literal_total = 0
        self._literal_needed: tuple[int, bool] | None = None
        self._awaiting_decision = False

    def _take_line(self, budget: int) -> "bytes | _TooLong | None":
        """One line without its CRLF (bare LF tolerated); _TooLong past ``budget``."""
        idx = self._buf.find(b"\n", self._scan_from)
        if idx < 0:
            if len(self._buf) > budget + 1:
                tag = read_tag(bytes(self._text) or bytes(self._buf[:200]))
                tail = bytes(self._buf[-32:])
                self._buf.clear()
                self._scan_from = 0
                return _TooLong(tag, False, tail)
            self._scan_from = len(self._buf)
            return None
        end = idx - 1 if idx > 0 and self._buf[idx - 1] == 0x0D else idx
        if end > budget:
            tag = read_tag(bytes(self._text) or bytes(self._buf[:200]))
            tail = bytes(self._buf[max(0, end - 32) : end])
            del self._buf[: idx + 1]
            self._scan_from = 0
            return _TooLong(tag, True, tail)
        line = bytes(self._buf[:end])
        del self._buf[: idx + 1]
        self._scan_from = 0
        return line

    def _too_long(self, info: "_TooLong", text: str):
        """Refuse an over-long line without buffering it. A non-synchronizing literal at its
        end would make the literal's octets look like commands, so that closes instead."""
        self._reset_command()
        self.mode = Mode.COMMAND
        if not info.complete:
            self._discarding = True
            self._discard_tail = info.tail
            return ev.BadCommand(info.tag, text, "TOOBIG")
        # same events whether the line's end arrived with it or later: BAD first, then maybe BYE
        self._pending = self._after_discard(info.tail)
        return ev.BadCommand(info.tag, text, "TOOBIG")

    def _after_discard(self, tail: bytes):
        m = _abnf.literal_at_end.search(tail)
        if m is not None and m.group(3):
            self.closed = True
            return ev.ConnectionMustClose(None, "Command line too long")
        return None

    def _discard(self):
        idx = self._buf.find(b"\n")
        if idx < 0:
            self._discard_tail = (self._discard_tail + bytes(self._buf[-32:]))[-32:]
            self._buf.clear()
            self._scan_from = 0
            return ev.NEED_DATA
        end = idx - 1 if idx > 0 and self._buf[idx - 1] == 0x0D else idx
        tail = (self._discard_tail + bytes(self._buf[max(0, end - 32) : end]))[-32:]
        del self._buf[: idx + 1]
        self._scan_from = 0
        self._discarding = False
        return self._after_discard(tail)

    def _announce_literal(self, size: int, binary: bool, nonsync: bool):
        text = bytes(self._text)
        tag = read_tag(text)
        command = read_command_name(text)
        cfg = self.config
        too_big = size > cfg.max_literal or self._literal_total + size > cfg.max_command_literals
        if nonsync and (
            too_big or (cfg.literal_minus and not cfg.literal_plus and size > LITERAL_MINUS_MAX)
        ):
            # RFC 7888 §4: the octets are already on their way; we will not read them
            self.closed = True
            self._reset_command()
            return ev.ConnectionMustClose(tag, "Literal too big", "TOOBIG")
        if tag is None and not nonsync:
            # no tag to answer with and the client waits for "+": refuse, it will not send it
            self._reset_command()
            return ev.BadCommand(None, "Missing or invalid tag")
        if too_big:
            self._reset_command()
            # RFC 9051 §7.1 TOOBIG (NO or BAD): NO for an APPEND over the size limit (RFC 7889
            # APPENDLIMIT), BAD for any other command, which has no business sending that much
            return ev.BadCommand(
                tag, "Literal too big", "TOOBIG", "NO" if command == "APPEND" else "BAD"
            )
        self._literal_total += size
        self._literal_needed = (size, binary)
        if nonsync:
            return None
        self._awaiting_decision = True
        return ev.LiteralContinuationNeeded(tag, command, size, binary)

    def _finish_command(self):
        text = bytes(self._text)
        literals = self._literals
        self._reset_command()
        try:
            cmd = parse_command(text, literals, self.utf8_enabled, self.config.max_search_depth)
        except ImapParseError as exc:
            tag = getattr(exc, "tag", None) or read_tag(text)
            return ev.BadCommand(tag, exc.text, exc.code, exc.status)
        if self.config.check_state:
            allowed = ALLOWED_STATES.get(cmd.name)
            if allowed is not None and self.state not in allowed:
                return ev.BadCommand(cmd.tag, f"{cmd.name} not allowed in {self.state.value} state")
        return cmd

    def _next_idle(self):
        line = self._take_line(256)
        if line is None:
            return ev.NEED_DATA
        self.mode = Mode.COMMAND
        if isinstance(line, _TooLong):
            return self._too_long(
                _TooLong(self._mode_tag, line.complete, line.tail), "Expected DONE"
            )
        if line.upper() == b"DONE":
            return ev.IdleDone(self._mode_tag)
        return ev.BadCommand(self._mode_tag, "Expected DONE")

    def _next_sasl(self):
        line = self._take_line(self.config.max_line)
        if line is None:
            return ev.NEED_DATA
        self.mode = Mode.COMMAND
        if isinstance(line, _TooLong):
            return self._too_long(
                _TooLong(self._mode_tag, line.complete, line.tail), "Authentication line too long"
            )
        if line == b"*":  # RFC 9051 §6.2.2: client cancels
            return ev.SaslResponse(self._mode_tag, b"", cancelled=True)
        if not _abnf.base64_line.fullmatch(line):
            return ev.BadCommand(self._mode_tag, "Invalid base64 in authentication exchange")
        self.mode = Mode.AUTHENTICATE
        return ev.SaslResponse(self._mode_tag, binascii.a2b_base64(line))


@dataclass(frozen=True, slots=True)
class _TooLong:
    tag: str | None
    complete: bool  # the line's end was seen (else the rest is skipped as it arrives)
    tail: bytes  # its last octets, to spot a literal announcement
