"""The daemon's SQLite fast paths (``reads.py``, ``writes.py``, ``blobread.py``) against the
store functions they stand for.

Two accounts get the same mail and the same operations — alice through the IMAP daemon (plain
sqlite3 statements), bob through ``mailserver.store`` — and must end with the same rows:
counters, memberships, keywords, MODSEQs, change log, search index, threads, quota and blob
reference counts. Then the answers: FETCH of flags and envelopes, byte for byte like the
general encoder, and on both engines (PostgreSQL takes the store-function paths).
"""

from __future__ import annotations

from mailserver.store.keywords import SEEN
from mailserver.testing.daemons import DOMAIN, daemon_env
from tests.servers.imap.conftest import RawImap, message

ROWS = {
    "mailboxes": ("SELECT path, uid_next, highest_modseq, total_count, unseen_count, "
                  "total_size FROM mailboxes WHERE account_id = ? ORDER BY id"),
    "memberships": ("SELECT mailbox_id, uid, email_id, modseq FROM mailbox_messages "
                    "WHERE account_id = ? ORDER BY mailbox_id, uid"),
    "emails": ("SELECT id, size, keywords, thread_id, updated_modseq FROM emails "
               "WHERE account_id = ? ORDER BY id"),
    "changes": ("SELECT modseq, object_type, object_id, change, mailbox_id, uid FROM changes "
                "WHERE account_id = ? ORDER BY modseq, object_type, object_id, change, "
                "mailbox_id, uid"),
    "account": ("SELECT modseq, used_bytes, next_mailbox_id, next_email_id, next_thread_id "
                "FROM accounts WHERE id = ?"),
    "thread_refs": ("SELECT message_id, thread_id FROM thread_refs WHERE account_id = ? "
                    "ORDER BY message_id"),
    "search": ("SELECT rowid - (? << 32) FROM email_fts WHERE rowid BETWEEN (? << 32) "
               "AND (? << 32) + 4294967295 ORDER BY rowid"),
}


async def _snapshot(env, account_id: int) -> dict[str, list]:
    async def read(conn):
        out = {}
        for name, sql in ROWS.items():
            args = (account_id,) * sql.count("?")
            out[name] = [tuple(r) for r in (await conn.exec_driver_sql(sql, args)).all()]
        return out

    return await env.app.db.run_read(read)


async def _blob_refs_consistent(env) -> None:
    async def read(conn):
        return (await conn.exec_driver_sql(
            "SELECT b.id, b.refcount, (SELECT count(*) FROM emails e WHERE e.blob_id = b.id) "
            "FROM blobs b")).all()

    for blob_id, refcount, emails in await env.app.db.run_read(read):
        assert refcount == emails, blob_id


async def test_writes_leave_the_same_rows_as_the_store(tmp_path):
    async with daemon_env(tmp_path, None, overrides={"imap": {"tls": "starttls"}}) as env:
        await env.start("imap")
        alice, bob = env.account_ids["alice"], env.account_ids["bob"]
        store = env.app.store if hasattr(env.app, "store") else None
        from mailserver.store.mailstore import MailStore

        store = store or MailStore(env.app.db, env.app.blobs, env.app.bus)
        for k in range(6):  # a thread of replies, then strangers
            raw = message(f"topic {k // 3}", f"body {k}", msgid=f"m{k}@x",
                          extra=f"In-Reply-To: <m{k - 1}@x>\r\n" if k % 3 else "")
            for user in ("alice", "bob"):
                result = await env.app.deliverer.deliver(raw, [f"{user}@{DOMAIN}"])
                assert result.all_delivered
        inbox = {a: (await store.get_mailbox_by_path(a, "INBOX")).id for a in (alice, bob)}
        archive = {a: await store.create_mailbox(a, "Keep") for a in (alice, bob)}
        c = await RawImap.connect(env.address("imap"))
        await c.greeting()
        await c.login("alice")
        await c.ok("SELECT INBOX")

        # STORE: add, remove, replace (keywords live on the email: the copy shares them)
        await c.ok("COPY 2 Keep")
        await store.copy(bob, inbox[bob], [2], archive[bob])
        await c.ok("STORE 1:3 +FLAGS (\\Seen \\Flagged)")
        await store.set_keywords(bob, mailbox_id=inbox[bob], uids=[1, 2, 3],
                                 add=[SEEN, "$flagged"])
        await c.ok("STORE 2 -FLAGS.SILENT (\\Seen)")
        await store.set_keywords(bob, mailbox_id=inbox[bob], uids=[2], remove=[SEEN])
        await c.ok("UID STORE 4:6 FLAGS (\\Deleted custom)")
        await store.set_keywords(bob, mailbox_id=inbox[bob], uids=[4, 5, 6],
                                 replace=["$deleted", "custom"])
        await c.ok("FETCH 4 BODY[TEXT]")  # implicit \Seen
        await store.set_keywords(bob, mailbox_id=inbox[bob], uids=[4], add=[SEEN])
        await c.ok("STORE 1 +FLAGS (\\Seen)")  # no change: no MODSEQ bump either
        await store.set_keywords(bob, mailbox_id=inbox[bob], uids=[1], add=[SEEN])
        # EXPUNGE: a UID subset, then all; the copy in Keep shares \Deleted and goes last
        await c.ok("STORE 2 +FLAGS (\\Deleted)")
        await store.set_keywords(bob, mailbox_id=inbox[bob], uids=[2], add=["$deleted"])
        await c.ok("UID EXPUNGE 5")
        await store.expunge(bob, inbox[bob], [5])
        await c.ok("EXPUNGE")
        await store.expunge(bob, inbox[bob])
        await c.ok("SELECT Keep")
        await c.ok("STORE 1 +FLAGS (\\Deleted)")
        await store.set_keywords(bob, mailbox_id=archive[bob], uids=[1], add=["$deleted"])
        await c.ok("CLOSE")
        await store.expunge(bob, archive[bob])
        await c.close()

        a, b = await _snapshot(env, alice), await _snapshot(env, bob)
        assert a["emails"], "the test deleted everything: it would compare nothing"
        assert len(a["emails"]) == 2 and len(a["search"]) == 2  # 1 and 3 are left
        for name in ROWS:
            assert a[name] == b[name], name
        await _blob_refs_consistent(env)


async def test_fetch_answers_match_the_general_encoder(tmp_path, database_url):
    from protocols.imap import fetch as imap_fetch
    from protocols.imap.values import FetchAttribute

    async with daemon_env(tmp_path, database_url, overrides={"imap": {"tls": "starttls"}}) as env:
        await env.start("imap")
        for k in range(3):
            await env.app.deliverer.deliver(
                message(f"=?utf-8?q?caf=C3=A9?= {k}", "x", msgid=f"e{k}@x",
                        extra='Cc: "Group": a@x, "B, b" <b@x>;\r\nReply-To: r@x (comment)\r\n'),
                [f"alice@{DOMAIN}"])
        c = await RawImap.connect(env.address("imap"))
        await c.greeting()
        await c.login("alice")
        await c.ok("SELECT INBOX")
        await c.ok("STORE 2 +FLAGS (\\Answered $label1)")
        flags = await c.ok("FETCH 1:* (FLAGS UID RFC822.SIZE MODSEQ)")
        store = env.app.store if hasattr(env.app, "store") else None
        from mailserver.message import parse_message
        from mailserver.store.keywords import flags_to_imap
        from mailserver.store.mailstore import MailStore

        store = store or MailStore(env.app.db, env.app.blobs, env.app.bus)
        account = env.account_ids["alice"]
        inbox = await store.get_mailbox_by_path(account, "INBOX")
        rows = await store.list_messages(account, inbox.id)
        atts = [FetchAttribute("FLAGS"), FetchAttribute("UID"), FetchAttribute("RFC822.SIZE"),
                FetchAttribute("MODSEQ")]
        expected = [imap_fetch.fetch_response(imap_fetch.MessageView(
            seq=i + 1, uid=m.uid, flags=tuple(flags_to_imap(m.keywords)), size=m.size,
            modseq=m.modseq), atts) for i, m in enumerate(rows)]
        assert flags[:-1] == expected
        assert b"\\Answered $label1" in flags[1]
        for _round in range(2):  # the second answer comes from the envelope cache
            envs = await c.ok("UID FETCH 1:* (ENVELOPE BODYSTRUCTURE)")
            for i, m in enumerate(rows):
                raw = await env.app.blobs.get(m.blob_id)
                want = imap_fetch.fetch_response(
                    imap_fetch.MessageView(seq=i + 1, uid=m.uid, parsed=parse_message(raw)),
                    [FetchAttribute("ENVELOPE"), FetchAttribute("BODYSTRUCTURE")],
                    uid_fetch=True)
                assert envs[i] == want
        assert b'(("Group" NIL "a" "x")' not in envs[0]  # a group, not a mailbox named Group
        assert b'"=?utf-8?q?caf=C3=A9?= 0"' in envs[0]  # ENVELOPE keeps the raw subject
        lines = await c.ok("STORE 1 +FLAGS (\\Deleted)")
        assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Deleted)")
        lines = await c.ok("EXPUNGE")
        assert lines[0] == b"* 1 EXPUNGE\r\n"
        assert len(await store.list_messages(account, inbox.id)) == 2
        await c.close()
