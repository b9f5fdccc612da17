"""CLI test fixtures: ``cli`` runs ``main(argv)`` in-process (fast, for the many small cases);
``setup`` is a data dir made by ``mailserver init`` once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from clihelpers import Result, run

@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(*argv) -> Result`` through ``mailserver.cli.main`` in this process."""
    from mailserver.cli import main

    monkeypatch.delenv("MAILSERVER_CONFIG", raising=False)

    def call(*argv: str) -> Result:
        capsys.readouterr()
        rc = main(list(argv))
        captured = capsys.readouterr()
        return Result(rc, captured.out, captured.err)
    return call


@pytest.fixture(scope="session")
def setup(tmp_path_factory) -> Path:
    """A data dir made by ``mailserver init`` (once per session, shared: tests use their own
    accounts and domains); returns its config path."""
    data = tmp_path_factory.mktemp("cli") / "data"
    r = run("init", "--data-dir", str(data), "--domain", "example.test", "--local",
            "--demo-password", "demo-secret")
    assert r.rc == 0, r.err
    return data / "mailserver.toml"
