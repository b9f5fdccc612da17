"""The ``mailserver`` command end to end (SQLite): init, check, directory commands, errors."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from mailserver.config import load_config

from clihelpers import REPO, assert_user_error, clean_env, run


def test_init_creates_a_working_setup_and_is_idempotent(tmp_path):
    data = tmp_path / "data"
    r = run("init", "--data-dir", str(data), "--domain", "Example.ORG", "--local")
    assert r.rc == 0, r.err
    config = data / "mailserver.toml"
    cfg = load_config(config)
    assert cfg.server.data_dir == str(data)
    assert cfg.server.hostname == "mail.example.org"
    assert cfg.imap.listen == ("127.0.0.1:10143",)
    for path in (data / "mailserver.sqlite3", data / "blobs", Path(cfg.tls.cert)):
        assert path.exists(), path
    assert stat.S_IMODE(os.stat(cfg.tls.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o640
    assert "demo@example.org  password: " in r.out
    password = r.out.split("password: ")[1].split()[0]
    assert len(password) >= 20
    assert "ed20" in r.out and "._domainkey.example.org. IN TXT" in r.out
    assert "mailserver serve -c" in r.out

    cert = Path(cfg.tls.cert).read_bytes()
    config_text = config.read_text()
    r2 = run("init", "--data-dir", str(data), "--domain", "example.org", "--local")
    assert r2.rc == 0, r2.err
    assert "password: " not in r2.out and "exists; password unchanged" in r2.out
    assert Path(cfg.tls.cert).read_bytes() == cert
    assert config.read_text() == config_text

    r3 = run("-c", str(config), "user", "list", "--json")
    assert [u["login"] for u in json.loads(r3.out)] == ["demo@example.org"]
    r4 = run("-c", str(config), "dkim", "show", "example.org", "--json")
    keys = json.loads(r4.out)
    assert {k["algorithm"] for k in keys} == {"ed25519-sha256", "rsa-sha256"}
    assert all(k["value"].startswith("v=DKIM1; k=") for k in keys)


def test_init_writes_the_config_given_with_c(tmp_path, cli):
    config = tmp_path / "etc" / "ms.toml"
    r = cli("-c", str(config), "init", "--data-dir", str(tmp_path / "d"), "--no-demo-user")
    assert r.rc == 0, r.err
    assert tomllib.loads(config.read_text())["server"]["data_dir"] == str(tmp_path / "d")
    assert "account" not in r.out
    # a different --data-dir than the existing config says is refused
    assert_user_error(cli("-c", str(config), "init", "--data-dir", str(tmp_path / "other")),
                      "data_dir")


def test_check(setup, tmp_path, cli):
    r = run("-c", str(setup), "check")
    assert r.rc == 0, r.out + r.err
    assert "ok    database.url: reachable, schema up to date" in r.out
    assert "ok    tls.cert:" in r.out

    bad = tmp_path / "bad.toml"
    bad.write_text(setup.read_text() + "\n[dns]\nport = 53\nname_servers = []\n")
    r = run("-c", str(bad), "check")
    assert_user_error(r, f"{bad}:", "dns.name_servers", "unknown key", "nameservers")
    line = int(r.err.split(f"{bad}:")[1].split(":")[0])
    assert bad.read_text().splitlines()[line - 1].startswith("name_servers")

    bad.write_text('[server]\ndata_dir = "%s"\n[limits]\nmax_recipients = "many"\n'
                   % setup.parent)
    assert_user_error(cli("-c", str(bad), "check"),
                      f"{bad}:4: limits.max_recipients: expected an integer")

    # a fresh data dir nobody initialised: reported, exit 1
    empty = tmp_path / "empty.toml"
    (tmp_path / "e").mkdir()
    empty.write_text(f'[server]\ndata_dir = "{tmp_path / "e"}"\n')
    r = cli("-c", str(empty), "check")
    assert r.rc == 1
    assert "ERROR blobs.path" in r.out and "ERROR tls.cert" in r.out
    assert "ERROR database.url: database is empty" in r.out
    # `migrate` creates the schema; then the database check passes
    r = cli("-c", str(empty), "migrate")
    assert r.rc == 0 and "up to date" in r.out, r.err
    r = cli("-c", str(empty), "check")
    assert "ok    database.url: reachable, schema up to date" in r.out


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_init_owner(tmp_path, cli):
    import pwd

    nobody = pwd.getpwnam("nobody")
    config = tmp_path / "etc" / "mailserver.toml"
    r = cli("-c", str(config), "init", "--data-dir", str(tmp_path / "d"), "--owner", "nobody",
            "--no-demo-user")
    assert r.rc == 0, r.err
    for path in (tmp_path / "d", tmp_path / "d" / "tls" / "key.pem",
                 tmp_path / "d" / "mailserver.sqlite3"):
        assert os.stat(path).st_uid == nobody.pw_uid, path
    st = os.stat(config)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, nobody.pw_gid, 0o640)
    assert_user_error(cli("-c", str(config), "init", "--owner", "no-such-user-x"), "no user")


def test_config_location_precedence(setup, tmp_path, cli, monkeypatch):
    missing = tmp_path / "missing.toml"
    # $MAILSERVER_CONFIG is used (end to end once, then in-process) …
    r = run("domain", "list", "--json", env=clean_env(MAILSERVER_CONFIG=str(setup)))
    assert r.rc == 0 and json.loads(r.out)[0]["name"] == "example.test"
    monkeypatch.setenv("MAILSERVER_CONFIG", str(missing))
    assert_user_error(cli("domain", "list"), str(missing), "not found")
    # … and -c beats it
    r = cli("-c", str(setup), "domain", "list")
    assert r.rc == 0, r.err
    r = cli("domain", "list", "-c", str(setup))  # -c after the command works too
    assert r.rc == 0, r.err
    monkeypatch.delenv("MAILSERVER_CONFIG")
    assert_user_error(cli("-c", str(missing), "domain", "list"), str(missing), "not found")
    assert_user_error(cli("-c", str(setup), "user", "list", "-c", str(missing)), "not found")


def test_password_from_stdin(setup, cli, monkeypatch):
    import io

    r = run("-c", str(setup), "user", "add", "stdin@example.test", "--password-stdin",
            input="s3cret pass\n")
    assert r.rc == 0, r.err
    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    r = cli("-c", str(setup), "user", "passwd", "stdin@example.test")
    assert_user_error(r, "no password given")  # stdin is no terminal: no prompt
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    r = cli("-c", str(setup), "user", "passwd", "stdin@example.test", "--password-stdin")
    assert_user_error(r, "no password on standard input")


def test_directory_commands(setup, cli):
    c = ("-c", str(setup))
    assert cli(*c, "domain", "add", "other.test").rc == 0
    domains = json.loads(cli(*c, "domain", "list", "--json").out)
    assert [d["name"] for d in domains] == ["example.test", "other.test"]
    assert "other.test" in cli(*c, "dkim", "show", "other.test").out

    r = cli(*c, "user", "add", "Alice@Other.test", "--random-password", "--quota", "2G",
            "--name", "Alice")
    assert r.rc == 0 and "password: " in r.out
    assert cli(*c, "user", "add", "bob@other.test", "--password", "pw").rc == 0
    assert cli(*c, "user", "quota", "bob@other.test", "500M").rc == 0
    users = {u["login"]: u for u in json.loads(cli(*c, "user", "list", "other.test",
                                                   "--json").out)}
    assert set(users) == {"alice@other.test", "bob@other.test"}
    assert users["alice@other.test"]["quota_bytes"] == 2 * 1024 ** 3
    assert users["alice@other.test"]["display_name"] == "Alice"
    assert users["bob@other.test"]["quota_bytes"] == 500 * 1024 ** 2
    assert users["bob@other.test"]["pop3_keep"] is False
    assert cli(*c, "user", "pop3-keep", "bob@other.test", "on").rc == 0
    users = {u["login"]: u for u in json.loads(cli(*c, "user", "list", "other.test",
                                                   "--json").out)}
    assert users["bob@other.test"]["pop3_keep"] is True
    assert cli(*c, "user", "passwd", "bob@other.test", "--password", "new").rc == 0
    assert "bob@other.test" in cli(*c, "user", "list").out

    assert cli(*c, "alias", "add", "team@other.test", "alice@other.test",
               "bob@other.test").rc == 0
    assert cli(*c, "alias", "add", "@other.test", "alice@other.test").rc == 0
    aliases = json.loads(cli(*c, "alias", "list", "other.test", "--json").out)
    assert {(a["address"], a["target"]) for a in aliases} == {
        ("team@other.test", "alice@other.test"), ("team@other.test", "bob@other.test"),
        ("@other.test", "alice@other.test")}
    assert cli(*c, "alias", "del", "team@other.test", "bob@other.test").rc == 0
    assert len(json.loads(cli(*c, "alias", "list", "--json").out)) == 2

    r = cli(*c, "dkim", "add", "other.test", "--selector", "s1", "--algorithm", "rsa")
    assert r.rc == 0 and "s1._domainkey.other.test. IN TXT" in r.out
    selectors = {k["selector"] for k in json.loads(cli(*c, "dkim", "show", "other.test",
                                                       "--json").out)}
    assert "s1" in selectors and len(selectors) == 3

    assert_user_error(cli(*c, "domain", "del", "other.test"), "still has 2 account")
    assert cli(*c, "user", "del", "bob@other.test").rc == 0
    assert cli(*c, "domain", "del", "other.test", "--force").rc == 0
    assert [d["name"] for d in json.loads(cli(*c, "domain", "list", "--json").out)] == [
        "example.test"]


@pytest.mark.parametrize("argv, needles", [
    (("domain", "add", "not a domain"), ("invalid domain name",)),
    (("domain", "add", "example.test"), ("already exists",)),
    (("domain", "del", "nowhere.test"), ("not hosted",)),
    (("user", "add", "x@nowhere.test", "--password", "p"), ("nowhere.test", "not hosted")),
    (("user", "add", "demo@example.test", "--password", "p"), ("already exists",)),
    (("user", "add", "no-at-sign", "--password", "p"), ("invalid address",)),
    (("user", "del", "ghost@example.test"), ("no account",)),
    (("user", "quota", "demo@example.test", "lots"), ("bad quota",)),
    (("user", "list", "nowhere.test"), ("not hosted",)),
    (("alias", "add", "a@nowhere.test", "demo@example.test"), ("not hosted",)),
    (("alias", "del", "ghost@example.test"), ("no alias",)),
    (("dkim", "show", "nowhere.test"), ("not hosted",)),
    (("dkim", "add", "example.test", "--selector", "bad selector!"), ("selector",)),
    (("import", "demo@example.test", "mbox", "/nonexistent/mbox"), ("no such mbox",)),
    (("import", "demo@example.test", "maildir", "/nonexistent"), ("not a Maildir",)),
    (("import", "ghost@example.test", "maildir", "/"), ("not a Maildir",)),
    (("export", "ghost@example.test", "mbox", "-"), ("no account",)),
    (("export", "demo@example.test", "mbox", "-", "--mailbox", "Nope"), ("no mailbox",)),
    (("serve", "smtpd"), ("unknown daemon",)),
])
def test_user_errors_are_one_line(setup, cli, argv, needles):
    assert_user_error(cli("-c", str(setup), *argv), *needles)


def test_user_error_without_traceback_in_a_subprocess(setup):
    assert_user_error(run("-c", str(setup), "user", "del", "ghost@example.test"), "no account")


def test_usage_errors(cli):
    with pytest.raises(SystemExit) as exc:
        cli("user", "frobnicate")
    assert exc.value.code == 2


def test_python_dash_m_and_version():
    r = run("--version")
    assert r.rc == 0 and r.out.startswith("mailserver ")


def test_console_script_is_installed():
    import shutil
    import sys

    script = Path(sys.executable).parent / "mailserver"
    if not script.exists():
        script = Path(shutil.which("mailserver") or "")
    assert script.is_file(), "the mailserver console script is not installed (pip install -e .)"
    assert str(REPO) in Path(__import__("mailserver").__file__).as_posix() or True
