"""The error raised when the *daemon* misuses the state machine.

Bad input from the peer never raises: it becomes an SMTP reply (and a ``ProtocolError``
event). ``SmtpProtocolError`` means our own code called the connection out of order, e.g.
sent a reply when no command is waiting for one.
"""

from __future__ import annotations


class SmtpProtocolError(Exception):
    """Local misuse of ``ServerConnection`` (wrong call for the current state)."""
