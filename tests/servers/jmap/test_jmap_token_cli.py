"""``mailserver token create|list|revoke`` end to end: the created secret opens JMAP as Bearer."""

from __future__ import annotations

import asyncio
import json

from mailserver.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_token_create_list_revoke(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAILSERVER_CONFIG", raising=False)
    data = tmp_path / "data"
    rc, _out, err = run(capsys, "init", "--data-dir", str(data), "--domain", "example.test",
                        "--local", "--no-demo-user")
    assert rc == 0, err
    config = str(data / "mailserver.toml")
    rc, _o, err = run(capsys, "-c", config, "user", "add", "dora@example.test",
                      "--password", "a long enough password")
    assert rc == 0, err
    rc, out, err = run(capsys, "-c", config, "token", "create", "dora@example.test",
                       "--name", "phone")
    assert rc == 0, err
    secret = out.strip()
    assert secret.startswith("ms_")
    rc, out, _ = run(capsys, "-c", config, "token", "list", "dora@example.test", "--json")
    [tok] = json.loads(out)
    assert tok["name"] == "phone" and tok["kind"] == "token"
    assert secret not in out

    async def check(expect_ok: bool) -> None:
        from mailserver.app import running_app
        from mailserver.config import load_config

        async with running_app(load_config(config)) as app:
            account = await app.directory.authenticate_token(secret)
            assert (account is not None) == expect_ok
    asyncio.run(check(True))
    rc, out, err = run(capsys, "-c", config, "token", "revoke", "dora@example.test",
                       str(tok["id"]))
    assert rc == 0, err
    asyncio.run(check(False))
    rc, _out, err = run(capsys, "-c", config, "token", "revoke", "dora@example.test", "99")
    assert rc == 1 and "99" in err
