"""Real IMAP clients against the daemon: imaplib, IMAPClient, aioimaplib, mbsync (isync),
getmail6, and a scripted session shaped like Thunderbird's."""

from __future__ import annotations

import asyncio
import imaplib
import os
import shutil
import tempfile
from pathlib import Path

from mailserver.testing.daemons import DOMAIN, PASSWORD
from tests.conftest import require_tool
from tests.servers.imap.conftest import RawImap, deliver, message, tagged

USER = f"alice@{DOMAIN}"


async def run_tool(*argv: str, cwd: Path | None = None, timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "HOME": str(cwd or Path.cwd())})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}:\n{text}"
    return text


async def test_imaplib_session(env):
    await deliver(env, message("for imaplib", "body text"))
    host, port = env.address("imap")

    def session():
        m = imaplib.IMAP4(host, port)
        m.login(USER, PASSWORD)
        typ, data = m.select("INBOX")
        assert (typ, data) == ("OK", [b"1"])
        typ, data = m.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: for imaplib\r\n\r\n"
        m.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(1_700_000_000),
                 message("appended"))
        typ, data = m.search(None, "FLAGGED")
        assert data == [b"2"]
        m.store("1:2", "+FLAGS", "(\\Deleted)")
        typ, data = m.expunge()
        assert data == [b"2", b"1"]  # expunges are announced highest first
        m.logout()

    await asyncio.to_thread(session)


async def test_imapclient_session(env):
    from imapclient import IMAPClient

    for i in range(3):
        await deliver(env, message(f"imapclient {i}", msgid=f"ic{i}@example.test"))
    host, port = env.address("imap")

    def session():
        with IMAPClient(host, port=port, ssl=False) as c:
            c.starttls(env.client_tls())
            c.login(USER, PASSWORD)
            assert c.has_capability("CONDSTORE") and c.has_capability("MOVE")
            folders = {f[2]: f[0] for f in c.list_folders()}
            assert b"\\Sent" in folders["Sent"]
            assert c.find_special_folder(b"\\Trash") == "Trash"
            info = c.select_folder("INBOX")
            assert info[b"EXISTS"] == 3 and b"HIGHESTMODSEQ" in info
            uids = c.search(["SUBJECT", "imapclient"])
            assert uids == [1, 2, 3]
            data = c.fetch(uids, ["ENVELOPE", "FLAGS", "RFC822.SIZE", "MODSEQ"])
            assert data[2][b"ENVELOPE"].subject == b"imapclient 1"
            assert data[2][b"ENVELOPE"].message_id == b"<ic1@example.test>"
            c.add_flags([1], [b"\\Seen", b"Work"])
            assert set(c.get_flags([1])[1]) == {b"\\Seen", b"work"}
            c.move([3], "Archive")
            assert c.search("ALL") == [1, 2]
            c.idle()
            responses = c.idle_check(timeout=0.2)
            c.idle_done()
            assert responses == []
            assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
            assert c.get_quota_root("INBOX")[0].mailbox == "INBOX"
            assert c.namespace().personal[0][0] == ""
            c.create_folder("IMAPClient/Child")
            c.rename_folder("IMAPClient", "Renamed")
            assert c.folder_exists("Renamed/Child")
            c.logout()

    await asyncio.to_thread(session)


async def test_aioimaplib_session_and_idle(env):
    import aioimaplib

    await deliver(env, message("aio one"))
    host, port = env.address("imap")
    c = aioimaplib.IMAP4(host=host, port=port, timeout=30)
    await c.wait_hello_from_server()
    resp = await c.login(USER, PASSWORD)
    assert resp.result == "OK"
    resp = await c.select("INBOX")
    assert resp.result == "OK" and any(b"1 EXISTS" in line for line in resp.lines)
    resp = await c.uid("fetch", "1:*", "(UID FLAGS)")
    assert resp.result == "OK"
    idle = await c.idle_start(timeout=10)
    await deliver(env, message("aio two"))
    pushed = await asyncio.wait_for(c.wait_server_push(), 10)
    assert b"* 2 EXISTS" in b"".join(x if isinstance(x, bytes) else b"" for x in pushed) or \
        any(b"2 EXISTS" in (x if isinstance(x, bytes) else str(x).encode()) for x in pushed)
    c.idle_done()
    await asyncio.wait_for(idle, 10)
    resp = await c.search("ALL")
    assert resp.result == "OK" and resp.lines[0] == b"1 2"
    await c.logout()


async def test_thunderbird_shaped_session(env):
    """CAPABILITY, ID, LIST-EXTENDED with SPECIAL-USE and STATUS, SELECT (CONDSTORE), UID FETCH
    1:* (FLAGS) (CHANGEDSINCE), header fetch, IDLE — the order Thunderbird uses."""
    for i in range(3):
        await deliver(env, message(f"tb {i}"))
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    await c.ok("CAPABILITY")
    await c.login()
    await c.ok('ID ("name" "Thunderbird" "version" "128.0")')
    await c.ok("ENABLE CONDSTORE")
    lines = await c.ok('LIST (SPECIAL-USE) "" "*"')
    assert len([r for r in lines if r.startswith(b"* LIST")]) == 5
    lines = await c.ok('LIST "" "*" RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN '
                       'RECENT UIDNEXT UIDVALIDITY HIGHESTMODSEQ))')
    inbox_status = [r for r in lines if r.startswith(b"* STATUS INBOX")][0]
    assert b"MESSAGES 3 UNSEEN 3 RECENT 0 UIDNEXT 4" in inbox_status
    lines = await c.ok("SELECT INBOX (CONDSTORE)")
    modseq = int([r for r in lines if b"HIGHESTMODSEQ" in r][0].split()[3].rstrip(b"]"))
    lines = await c.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
    assert len(lines) == 4 and all(b"MODSEQ (" in r for r in lines[:3])
    lines = await c.ok("UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To "
                       "Cc Bcc Subject Date Message-ID Priority X-Priority References "
                       "Newsgroups In-Reply-To Content-Type Reply-To)])")
    assert b"Subject: tb 0\r\n" in lines[0]
    lines = await c.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert len(lines) == 1
    await c.ok("UID STORE 2 +FLAGS (\\Seen)")
    c.send(b"i1 IDLE\r\n")
    assert await c.response() == b"+ idling\r\n"
    await deliver(env, message("tb new"))
    assert await asyncio.wait_for(c.response(), 5) == b"* 4 EXISTS\r\n"
    c.send(b"DONE\r\n")
    assert await c.response() == b"i1 OK IDLE terminated\r\n"
    lines = await c.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})")
    assert [r.split(b" FLAGS")[0] for r in lines[:-1]] == [b"* 2 FETCH (UID 2",
                                                           b"* 4 FETCH (UID 4"]
    await c.ok("LOGOUT")
    await c.close()


def _maildir_messages(folder: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") if (folder / sub).is_dir()
                  for p in (folder / sub).iterdir())


async def test_mbsync_two_way_sync_and_resync(env, tmp_path):
    mbsync = require_tool("mbsync", "isync")
    await deliver(env, message("server one", msgid="s1@example.test"))
    await deliver(env, message("server two", msgid="s2@example.test"))
    host, port = env.address("imap")
    local = tmp_path / "Maildir"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""
IMAPAccount test
Host {host}
Port {port}
User {USER}
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account test

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    await run_tool(mbsync, "-c", str(rc), "-a", cwd=tmp_path)
    inbox = local / "INBOX"
    files = _maildir_messages(inbox)
    assert len(files) == 2
    assert {b"Subject: server one", b"Subject: server two"} <= {
        line.rstrip(b"\r") for f in files for line in f.read_bytes().split(b"\n")}
    assert (local / "Sent").is_dir() and (local / "Archive").is_dir()

    # changes on both sides: a new local message, a local flag, a server flag, a server
    # delivery and a server expunge
    (inbox / "cur" / "1700000000.local1.host:2,S").write_bytes(message("local new"))
    seen_file = [f for f in files if b"server one" in f.read_bytes()][0]
    seen_file.rename(seen_file.with_name(seen_file.name.split(":2,")[0] + ":2,F"))
    await deliver(env, message("server three"))
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    await c.login()
    await c.ok("SELECT INBOX")
    await c.ok("STORE 2 +FLAGS (\\Deleted)")
    await c.ok("EXPUNGE")
    await run_tool(mbsync, "-c", str(rc), "-a", cwd=tmp_path)

    subjects = sorted(line.rstrip(b"\r") for f in _maildir_messages(inbox)
                      for line in f.read_bytes().split(b"\n") if line.startswith(b"Subject:"))
    assert subjects == [b"Subject: local new", b"Subject: server one", b"Subject: server three"]
    await c.ok("NOOP")
    lines = await c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    by_subject = {r.split(b"Subject: ")[1].split(b"\r\n")[0]: r for r in lines[:-1]}
    assert set(by_subject) == {b"server one", b"server three", b"local new"}
    assert b"\\Flagged" in by_subject[b"server one"]
    assert b"\\Seen" in by_subject[b"local new"]
    # a third run changes nothing
    await run_tool(mbsync, "-c", str(rc), "-a", cwd=tmp_path)
    assert len(_maildir_messages(inbox)) == 3
    lines = await c.ok("STATUS INBOX (MESSAGES)")
    assert lines[0] == b"* STATUS INBOX (MESSAGES 3)\r\n"
    await c.close()


async def test_getmail6_retrieves_all(env, tmp_path):
    getmail = require_tool("getmail", "getmail6")
    for i in range(3):
        await deliver(env, message(f"getmail {i}"))
    host, port = env.address("imap")
    # getmail refuses to deliver as root: it switches to "nobody", who needs the maildir
    maildir = Path(tempfile.mkdtemp(prefix="getmail-"))
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for d in (maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
        d.chmod(0o777)
    rc = tmp_path / "getmailrc"
    rc.write_text(f"""[retriever]
type = SimpleIMAPRetriever
server = {host}
port = {port}
username = {USER}
password = {PASSWORD}
mailboxes = ("INBOX",)

[destination]
type = Maildir
path = {maildir}/

{"user = nobody" if os.geteuid() == 0 else ""}

[options]
read_all = true
delete = false
verbose = 0
""")
    try:
        await run_tool(getmail, f"--rcfile={rc}", f"--getmaildir={tmp_path}", cwd=tmp_path)
        files = _maildir_messages(maildir)
        assert len(files) == 3
        assert all(b"Subject: getmail " in f.read_bytes() for f in files)
    finally:
        shutil.rmtree(maildir, ignore_errors=True)
    c = await RawImap.connect(env.address("imap"))
    await c.greeting()
    await c.login()
    lines = await c.ok("STATUS INBOX (MESSAGES)")
    assert tagged(lines).startswith(b"t")
    assert lines[0] == b"* STATUS INBOX (MESSAGES 3)\r\n"
    await c.close()
