"""Two processes × 10 tasks appending to one mailbox on PostgreSQL: UIDs unique, ascending per
writer, dense; nothing lost; counters exact."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from mailhelpers import create_account, recount, stored_counters
from mailserver.store.engine import Database
from mailserver.store.mailstore import MailStore

HERE = Path(__file__).resolve().parent


async def test_two_processes_append_to_one_mailbox(pg_cluster):
    url = pg_cluster.url(pg_cluster.create_database())
    db = Database(url)
    await db.create_schema()
    acc = await create_account(db, "race@example.com")
    inbox = (await MailStore(db).get_mailbox_by_role(acc, "inbox")).id
    tasks, per_task = 10, 6
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]))
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "concurrent_worker.py"), url, str(acc), str(inbox),
        str(tasks), str(per_task), f"p{p}", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env) for p in range(2)]
    outs = []
    for proc in procs:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, stderr.decode()[-3000:]
        outs.append(json.loads(stdout))
    total = 2 * tasks * per_task
    uids = [uid for out in outs for _t, uid in out]
    assert sorted(uids) == list(range(1, total + 1))  # unique, dense, none lost
    for out in outs:
        for t in range(tasks):
            mine = [uid for task, uid in out if task == t]
            assert mine == sorted(mine)  # each writer sees ascending UIDs
    store = MailStore(db)
    assert [u for u, _e, _m in await store.uid_map(acc, inbox)] == list(range(1, total + 1))
    st = await store.mailbox_status(acc, inbox)
    assert st.total == total and st.uid_next == total + 1
    async with db.read() as conn:
        assert await stored_counters(conn, acc) == await recount(conn, acc)
    await db.close()
