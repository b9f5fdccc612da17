"""Self-signed certificates and the logging set-up of ``mailserver.app``."""

from __future__ import annotations

import io
import json
import logging
import os
import ssl

import pytest

from mailserver.app import configure_logging
from mailserver.config import LogConfig
from mailserver.tlscert import check_pair, write_self_signed


def test_self_signed_pair(tmp_path):
    cert, key = str(tmp_path / "tls" / "cert.pem"), str(tmp_path / "tls" / "key.pem")
    assert write_self_signed(cert, key, "mail.example.test") is True
    info = check_pair(cert, key)
    assert info.names == ("mail.example.test", "localhost", "127.0.0.1", "::1")
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    before = open(cert, "rb").read()
    assert write_self_signed(cert, key, "other.example") is False  # never clobbers
    assert open(cert, "rb").read() == before
    ctx = ssl.create_default_context(cafile=cert)  # usable as a trust anchor by clients
    assert ctx.cert_store_stats()["x509"] == 1


def test_check_pair_rejects_mismatched_key(tmp_path):
    a = (str(tmp_path / "a.pem"), str(tmp_path / "a.key"))
    b = (str(tmp_path / "b.pem"), str(tmp_path / "b.key"))
    write_self_signed(*a, "a.example")
    write_self_signed(*b, "b.example")
    with pytest.raises(ssl.SSLError):
        check_pair(a[0], b[1])
    with pytest.raises(OSError):
        check_pair(str(tmp_path / "none.pem"), a[1])


def test_json_logging():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging(LogConfig(level="info", format="json"), stream)
        logging.getLogger("mailserver.test").info("hello %s", "you",
                                                  extra={"session": "s1", "peer": "::1"})
        logging.getLogger("mailserver.test").debug("hidden")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["msg"] == "hello you" and event["level"] == "info"
    assert event["session"] == "s1" and event["peer"] == "::1"
    assert event["logger"] == "mailserver.test" and event["ts"].endswith("Z")
