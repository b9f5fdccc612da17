"""``mailserver serve pop3`` as its own process (what the systemd unit runs): it comes up,
serves poplib, sees mail delivered by another process, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import poplib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mailserver.app import open_app
from mailserver.config import load_config
from mailserver.store.mailstore import MailStore
from mailserver.store.migrate import upgrade
from mailserver.tlscert import write_self_signed

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_serve_pop3_process(tmp_path) -> None:
    data = tmp_path / "data"
    (data / "tls").mkdir(parents=True)
    port, tls_port = free_port(), free_port()
    cfg_path = tmp_path / "mailserver.toml"
    cfg_path.write_text(
        f'[server]\ndata_dir = "{data}"\nhostname = "mail.example.test"\n'
        '[log]\nformat = "text"\nlevel = "info"\n'
        f'[pop3]\nlisten = ["127.0.0.1:{port}"]\nlisten_tls = ["127.0.0.1:{tls_port}"]\n')
    cfg = load_config(cfg_path)
    write_self_signed(cfg.tls.cert, cfg.tls.key, "mail.example.test")
    await upgrade(cfg.database.url)
    app = await open_app(cfg)
    try:
        await app.directory.add_domain("example.test")
        await app.directory.add_account("zoe@example.test", "a long enough password")
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        proc = subprocess.Popen([sys.executable, "-m", "mailserver", "-c", str(cfg_path),
                                 "serve", "pop3"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", tls_port), 1).close()
                    break
                except OSError:
                    assert proc.poll() is None, proc.communicate()[1]
                    assert time.monotonic() < deadline, "pop3 did not come up"
                    await asyncio.sleep(0.2)
            raw = b"Subject: hello\r\n\r\nfrom another process\r\n"
            assert (await app.deliverer.deliver(raw, ["zoe@example.test"])).all_delivered

            def fetch() -> list[bytes]:
                import ssl

                ctx = ssl.create_default_context(cafile=cfg.tls.cert)
                ctx.check_hostname = False
                c = poplib.POP3_SSL("127.0.0.1", tls_port, context=ctx, timeout=30)
                c.user("zoe@example.test")
                c.pass_("a long enough password")
                lines = c.retr(1)[1]
                c.dele(1)
                c.quit()
                return lines

            assert await asyncio.to_thread(fetch) == [b"Subject: hello", b"",
                                                      b"from another process"]
            proc.send_signal(signal.SIGTERM)
            _out, err = await asyncio.to_thread(proc.communicate, timeout=60)
            assert proc.returncode == 0, err
            assert "pop3" in err and "login of zoe@example.test" in err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # the DELE + QUIT of the other process is in the store
        store = MailStore(app.db)
        account_id = (await app.directory.get_account("zoe@example.test")).id
        inbox = await store.get_mailbox_by_role(account_id, "inbox")
        assert (await store.mailbox_status(account_id, inbox.id)).total == 0
    finally:
        await app.close()
