"""The systemd units: consistent with each other and with the daemon registry, and accepted by
``systemd-analyze verify`` (.ci/apt-packages installs it; elsewhere the test skips without it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from clihelpers import REPO, require_tool
from mailserver import servers

UNITS = REPO / "systemd"


def parse(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def test_one_unit_per_daemon_from_one_template():
    services = {p.name: parse(p) for p in UNITS.glob("*.service")}
    expected = {"mailserver.service"} | {f"mailserver-{d}.service" for d in servers.DAEMONS}
    # extra queue worker processes (mailserver-queue@2, …): a template unit of its own
    assert set(services) == expected | {"mailserver-queue@.service"}
    reference = [kv for kv in services["mailserver.service"]["Service"]
                 if kv[0] != "ExecStart"]
    for name, unit in services.items():
        service = dict(unit["Service"])
        daemon = name.removeprefix("mailserver-").removesuffix(".service").removesuffix("@")
        want = "/usr/local/bin/mailserver serve" + ("" if name == "mailserver.service"
                                                    else f" {daemon}")
        assert service["ExecStart"] == want
        assert [kv for kv in unit["Service"] if kv[0] != "ExecStart"] == reference, name
        assert service["Type"] == "notify" and service["WatchdogSec"] == "30"
        assert service["User"] == "mailserver"
        assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
            assert service[key] == "yes", (name, key)
        assert service["ProtectSystem"] == "strict"
        assert "/var/lib/mailserver" in service["ReadWritePaths"]
        assert ("PartOf", "mailserver.target") in unit["Unit"]
        assert ("WantedBy", "mailserver.target") in unit["Install"]
    conflicts = dict(services["mailserver.service"]["Unit"])["Conflicts"].split()
    assert set(conflicts) == expected - {"mailserver.service"}


def test_systemd_analyze_verify(tmp_path):
    tool = require_tool("systemd-analyze")
    # verify insists that ExecStart exists: point the copies at a binary that does
    exe = os.path.realpath("/bin/true")
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(
            unit.read_text().replace("/usr/local/bin/mailserver", exe))
    paths = sorted(str(p) for p in tmp_path.iterdir())
    r = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    ours = [ln for ln in (r.stdout + r.stderr).splitlines()
            if "mailserver" in ln or str(tmp_path) in ln]
    assert r.returncode == 0, r.stdout + r.stderr
    assert ours == [], "\n".join(ours)  # unknown keys are only warnings: none allowed
