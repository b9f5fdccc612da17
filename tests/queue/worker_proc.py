"""A queue worker in its own process, for the crash and concurrency tests.

    python worker_proc.py CONFIG_JSON [--until-empty]

CONFIG_JSON is the config as a dict (what ``parse_config`` takes). With ``--until-empty`` the
process stops once the queue has no recipients left and prints its stats as JSON; without it,
it runs until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys

from sqlalchemy import func, select

from mailserver.app import open_app
from mailserver.config import parse_config
from mailserver.servers.queue import make_worker
from mailserver.store import schema


async def main(raw: dict, until_empty: bool) -> None:
    cfg = parse_config(raw)
    app = await open_app(cfg)
    try:
        worker = make_worker(app, cfg.queue)
        task = asyncio.create_task(worker.run())
        print("ready", flush=True)
        while until_empty:
            await asyncio.sleep(0.2)
            async with app.db.read() as conn:
                left = (await conn.execute(
                    select(func.count()).select_from(schema.queue_recipients))).scalar_one()
            if left == 0:
                break
        if not until_empty:
            await task
        await worker.stop()
        await task
        print(json.dumps(worker.stats), flush=True)
    finally:
        await app.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), "--until-empty" in sys.argv))
