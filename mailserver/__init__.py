"""Mail server suite: SMTP, IMAP, POP3 and JMAP daemons on one store and one delivery queue."""

__version__ = "0.1.0"
