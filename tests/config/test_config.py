"""Config loading: defaults = the documented file, strict validation with located errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mailserver import config as C
from mailserver.config import ConfigError, find_key_line, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "conf" / "mailserver.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mailserver.toml"
    p.write_text(text)
    return p


def test_documented_file_is_exactly_the_defaults():
    assert load_config(DOC) == parse_config({}) == parse_config({}, path=str(DOC))


def test_every_field_is_documented_with_a_comment():
    text = DOC.read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    for keypath in C.iter_fields():
        node = data
        for part in keypath:
            assert part in node, f"{'.'.join(keypath)} missing from conf/mailserver.toml"
            node = node[part]
        line = find_key_line(text, keypath)
        assert line is not None, keypath
        assert lines[line - 1].split("=")[0].strip() == keypath[-1]
        assert lines[line - 2].lstrip().startswith("#"), f"{'.'.join(keypath)} has no comment"
    # and nothing documented that the schema does not know (load_config would reject it anyway)
    n_documented = sum(1 for ln in lines if re.match(r"^[a-z_0-9]+ = ", ln))
    assert n_documented == len(C.iter_fields())


def test_empty_file_is_valid_and_substitutes_data_dir(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg.server.data_dir == "/var/lib/mailserver"
    assert cfg.database.url == "sqlite:////var/lib/mailserver/mailserver.sqlite3"
    assert cfg.tls.cert == "/var/lib/mailserver/tls/cert.pem"
    assert cfg.lmtp.listen == ("unix:/var/lib/mailserver/lmtp.sock",)
    assert cfg.limits.max_message_size == 50 * 1024 * 1024


def test_relative_data_dir_is_relative_to_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, '[server]\ndata_dir = "data"\n'))
    assert cfg.server.data_dir == str(tmp_path / "data")
    assert cfg.blobs.path == str(tmp_path / "data" / "blobs")


def test_units(tmp_path):
    cfg = load_config(write(tmp_path, (
        '[limits]\nmax_message_size = "2G"\nidle_timeout = 90\n'
        '[queue]\nmax_age = "2d"\nretry_schedule = ["30s", 60, "1.5h"]\n'
        '[delivery]\nmax_delay = "250ms"\n')))
    assert cfg.limits.max_message_size == 2 * 1024 ** 3
    assert cfg.limits.idle_timeout == 90.0
    assert cfg.queue.max_age == 2 * 86400
    assert cfg.queue.retry_schedule == (30.0, 60.0, 5400.0)
    assert cfg.delivery.max_delay == 0.25
    assert C.parse_size("500M") == 500 * 1024 * 1024
    assert C.parse_size("1KiB") == 1024
    assert C.format_size(2 * 1024 ** 3) == "2G"


def error_of(tmp_path: Path, text: str) -> ConfigError:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    err = exc.value
    assert err.path == str(p)
    assert str(err).startswith(f"{p}:{err.line}: ")
    return err


def test_unknown_key_names_key_file_and_line(tmp_path):
    err = error_of(tmp_path, '[server]\nhostname = "a"\n\n[imap]\nenabled = true\nlisten_tsl = []\n')
    assert (err.key, err.line) == ("imap.listen_tsl", 6)
    assert "unknown key" in str(err) and "listen_tls" in str(err)  # the suggestion


def test_unknown_table(tmp_path):
    err = error_of(tmp_path, '# comment\n\n[imapd]\nenabled = true\n')
    assert (err.key, err.line) == ("imapd", 3)
    assert "unknown table" in err.message


def test_unknown_nested_key(tmp_path):
    err = error_of(tmp_path, '[smtp]\n[smtp.mx]\nenabled = false\n\n[smtp.submision]\nx = 1\n')
    assert (err.key, err.line) == ("smtp.submision", 5)


def test_wrong_type(tmp_path):
    err = error_of(tmp_path, '[database]\nurl = "sqlite:///x"\npool_size = "ten"\n')
    assert (err.key, err.line) == ("database.pool_size", 3)
    assert "expected an integer, got a string" in err.message


def test_wrong_type_bool_is_not_int(tmp_path):
    err = error_of(tmp_path, '[dns]\nport = true\n')
    assert (err.key, err.line) == ("dns.port", 2)


def test_wrong_type_in_array_names_the_index(tmp_path):
    err = error_of(tmp_path, '[imap]\nlisten = [\n  "*:143",\n  143,\n]\n')
    assert (err.key, err.line) == ("imap.listen[1]", 2)


def test_bad_value_enum(tmp_path):
    err = error_of(tmp_path, '[log]\nlevel = "info"\nformat = "xml"\n')
    assert (err.key, err.line) == ("log.format", 3)
    assert "'json'" in err.message


def test_bad_value_check(tmp_path):
    err = error_of(tmp_path, '[pop3]\nlisten = ["localhost:99999"]\n')
    assert (err.key, err.line) == ("pop3.listen", 2)
    err = error_of(tmp_path, '[limits]\nmax_message_size = "lots"\n')
    assert (err.key, err.line) == ("limits.max_message_size", 2)
    err = error_of(tmp_path, '[database]\npool_size = 0\n')
    assert (err.key, err.line) == ("database.pool_size", 2)
    err = error_of(tmp_path, '[database]\nurl = "mysql://x"\n')
    assert (err.key, err.line) == ("database.url", 2)
    err = error_of(tmp_path, '[blobs]\nbackend = "s3"\n')
    assert (err.key, err.line) == ("blobs.backend", 2)


def test_dotted_keys_and_inline_tables(tmp_path):
    err = error_of(tmp_path, 'imap.enabled = 1\n')
    assert (err.key, err.line) == ("imap.enabled", 1)
    err = error_of(tmp_path, '[smtp]\nmx.tls = "sometimes"\n')
    assert (err.key, err.line) == ("smtp.mx.tls", 2)
    # inside an inline table the key itself is not on its own line: the table's line is given
    err = error_of(tmp_path, '\n\nlog = { level = "loud" }\n')
    assert (err.key, err.line) == ("log.level", 3)


def test_section_that_is_not_a_table(tmp_path):
    err = error_of(tmp_path, 'imap = 3\n')
    assert (err.key, err.line) == ("imap", 1)


def test_toml_syntax_error_has_line(tmp_path):
    err = error_of(tmp_path, '[server]\nhostname = "a"\ndata_dir = \n')
    assert err.line == 3 and "syntax" in err.message


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml")
    assert "not found" in str(exc.value) and "nope.toml" in str(exc.value)


def test_find_key_line_skips_multiline_strings_and_comments():
    text = (
        '# [imap]\n'             # 1
        '[jmap]\n'               # 2
        'base_url = """\n'       # 3
        'listen = 1\n'           # 4  (inside the string)
        '"""\n'                  # 5
        'listen = ["*:1"]   # x\n'  # 6
        '[ "imap" ]\n'           # 7
        "'listen' = []\n"        # 8
    )
    assert find_key_line(text, ["jmap", "listen"]) == 6
    assert find_key_line(text, ["imap"]) == 7
    assert find_key_line(text, ["imap", "listen"]) == 8
    assert find_key_line(text, ["pop3", "listen"]) is None


def test_config_path_precedence():
    env = {"MAILSERVER_CONFIG": "/env.toml"}
    assert C.config_path("/opt.toml", env) == "/opt.toml"
    assert C.config_path(None, env) == "/env.toml"
    assert C.config_path(None, {}) == C.DEFAULT_CONFIG_PATH == "/etc/mailserver/mailserver.toml"


def test_parse_listen():
    assert C.parse_listen("*:25") == C.ListenAddress(None, 25)
    assert C.parse_listen("127.0.0.1:143") == C.ListenAddress("127.0.0.1", 143)
    assert C.parse_listen("[::1]:993") == C.ListenAddress("::1", 993)
    assert C.parse_listen("unix:/run/x.sock").unix_path == "/run/x.sock"
    assert str(C.parse_listen("[::1]:993")) == "[::1]:993"
    for bad in ("25", "host", "unix:rel", "[::1]", "a:b"):
        with pytest.raises(ValueError):
            C.parse_listen(bad)


def test_render_toml_roundtrip():
    text = C.render_toml({"server": {"hostname": 'a"b\\c\x7f', "data_dir": "/x"},
                          "smtp.mx": {"listen": ["*:2525"], "enabled": False}},
                         header="generated\nby a test")
    data = tomllib.loads(text)
    assert data["server"]["hostname"] == 'a"b\\c\x7f'
    assert data["smtp"]["mx"] == {"listen": ["*:2525"], "enabled": False}
    assert parse_config(data).smtp.mx.listen == ("*:2525",)
