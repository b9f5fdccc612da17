"""Debian's POP3 clients against the daemon: fetchmail (STLS on 110-style port, implicit TLS)
and getmail6 (implicit TLS), fetching with delete and with keep + UIDL bookkeeping."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailserver.store import mailboxes as mbx
from mailserver.store import messages as msg
from mailserver.store.mailstore import MailStore
from mailserver.testing.daemons import HOSTNAME, PASSWORD
from tests.conftest import require_tool

MAILS = [
    b"From: a@example.org\r\nTo: alice@example.test\r\nSubject: first\r\n"
    b"Message-ID: <m1@example.org>\r\n\r\n.dot line\r\nplain line\r\n",
    b"From: b@example.org\r\nTo: alice@example.test\r\nSubject: second\r\n"
    b"Message-ID: <m2@example.org>\r\n\r\n" + b"".join(b"line %d\r\n" % i for i in range(20000)),
    b"From: c@example.org\r\nTo: alice@example.test\r\nSubject: third\r\n"
    b"Message-ID: <m3@example.org>\r\n\r\nbare\nLF\n.\n..\nend\n",
]


async def deliver(env, raw: bytes) -> None:
    assert (await env.app.deliverer.deliver(raw, [env.login("alice")])).all_delivered


async def inbox_count(env) -> int:
    account = env.account_ids["alice"]

    async def read(conn):
        inbox = await mbx.get_mailbox_by_role(conn, account, "inbox")
        return len(await msg.list_messages(conn, account, inbox.id))
    return await MailStore(env.app.db).read(read)


def lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


async def run(*argv: str, env_vars: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env_vars or {})})
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(errors="replace")


# ------------------------------------------------------------------------------------------------
# fetchmail
# ------------------------------------------------------------------------------------------------

def fetchmailrc(tmp: Path, env, *, port: int, tls: str, keep: bool) -> Path:
    cert = env.data_dir / "tls" / "cert.pem"
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    tls_opts = {"stls": "sslproto tls1.2+", "implicit": "ssl"}[tls]
    rc = tmp / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll 127.0.0.1 service {port} protocol pop3 uidl\n"
        f'  user "{env.login("alice")}" there with password "{PASSWORD}" is "alice" here\n'
        f'  {tls_opts} sslcertck sslcertfile "{cert}" sslcommonname "{HOSTNAME}"\n'
        f"  {'keep' if keep else 'no keep fetchall'}\n"
        f"  mda \"/bin/sh -c 'cat > {out}/msg.$$'\"\n")
    rc.chmod(0o600)
    return rc


async def fetchmail(tmp: Path, rc: Path) -> tuple[int, str]:
    exe = require_tool("fetchmail", "Debian package fetchmail")
    return await run(exe, "--nodetach", "--invisible", "-f", str(rc), "-i",
                     str(tmp / "fetchids"), "--pidfile", str(tmp / "fetchmail.pid"),
                     env_vars={"HOME": str(tmp), "FETCHMAILHOME": str(tmp)})


def fetched(tmp: Path) -> list[bytes]:
    return sorted((p.read_bytes() for p in (tmp / "out").iterdir()), key=len)


@pytest.mark.parametrize("tls", ["stls", "implicit"])
async def test_fetchmail_fetches_and_deletes(env, tmp_path, tls) -> None:
    for raw in MAILS:
        await deliver(env, raw)
    _, port = env.address("pop3", tls=tls == "implicit")
    work = tmp_path / "fm"
    work.mkdir()
    code, out = await fetchmail(work, fetchmailrc(work, env, port=port, tls=tls, keep=False))
    assert code == 0, out
    got = fetched(work)
    assert len(got) == 3, out
    for raw, mail in zip(sorted(MAILS, key=len), got):
        assert mail.endswith(lf(raw)), (mail[:300], out)
    assert await inbox_count(env) == 0  # fetchmail DELE'd and QUIT: expunged in the store
    code, out = await fetchmail(work, fetchmailrc(work, env, port=port, tls=tls, keep=False))
    assert code == 1, out  # fetchmail's "no mail"


async def test_fetchmail_keep_uses_uidl(env, tmp_path) -> None:
    await deliver(env, MAILS[0])
    _, port = env.address("pop3", tls=True)
    work = tmp_path / "fm"
    work.mkdir()
    rc = fetchmailrc(work, env, port=port, tls="implicit", keep=True)
    code, out = await fetchmail(work, rc)
    assert code == 0 and len(fetched(work)) == 1, out
    code, out = await fetchmail(work, rc)  # seen by UIDL: nothing new
    assert code == 1 and len(fetched(work)) == 1, out
    await deliver(env, MAILS[2])
    code, out = await fetchmail(work, rc)
    assert code == 0, out
    got = fetched(work)
    assert len(got) == 2 and any(m.endswith(lf(MAILS[2])) for m in got), out
    assert await inbox_count(env) == 2  # kept on the server


# ------------------------------------------------------------------------------------------------
# getmail6
# ------------------------------------------------------------------------------------------------

def getmailrc(tmp: Path, env, *, port: int, delete: bool) -> Path:
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    rc = tmp / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = 127.0.0.1\n"
        f"port = {port}\n"
        f"username = {env.login('alice')}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {env.data_dir / 'tls' / 'cert.pem'}\n"
        f"ssl_cert_hostname = {HOSTNAME}\n"
        "[destination]\n"
        # an external MDA rather than Maildir: getmail's Maildir delivery refuses to run as
        # root, which is what CI containers are
        "type = MDA_external\n"
        "path = /bin/sh\n"
        f"arguments = (\"-c\", \"cat > {out}/msg.$$\")\n"
        "unixfrom = false\n"
        "allow_root_commands = true\n"
        "[options]\n"
        f"delete = {'true' if delete else 'false'}\n"
        "read_all = false\n"
        "verbose = 1\n")
    return rc


async def getmail(tmp: Path, rc: Path) -> tuple[int, str]:
    exe = require_tool("getmail", "Debian package getmail6")
    return await run(exe, "--getmaildir", str(tmp), "--rcfile", str(rc))


def delivered_messages(tmp: Path) -> list[bytes]:
    return sorted((p.read_bytes() for p in (tmp / "out").iterdir()), key=len)


async def test_getmail_fetches_and_deletes(env, tmp_path) -> None:
    for raw in MAILS:
        await deliver(env, raw)
    _, port = env.address("pop3", tls=True)
    work = tmp_path / "gm"
    work.mkdir()
    code, out = await getmail(work, getmailrc(work, env, port=port, delete=True))
    assert code == 0, out
    got = delivered_messages(work)
    assert len(got) == 3, out
    for raw, mail in zip(sorted(MAILS, key=len), got):
        assert mail.endswith(lf(raw)), (mail[:300], out)
    assert await inbox_count(env) == 0


async def test_getmail_keep_fetches_only_new(env, tmp_path) -> None:
    await deliver(env, MAILS[0])
    _, port = env.address("pop3", tls=True)
    work = tmp_path / "gm"
    work.mkdir()
    rc = getmailrc(work, env, port=port, delete=False)
    code, out = await getmail(work, rc)
    assert code == 0 and len(delivered_messages(work)) == 1, out
    await deliver(env, MAILS[2])
    code, out = await getmail(work, rc)
    assert code == 0, out
    got = delivered_messages(work)
    assert len(got) == 2, out
    assert any(m.endswith(lf(MAILS[0])) for m in got) and any(m.endswith(lf(MAILS[2])) for m in got)
    assert await inbox_count(env) == 2
