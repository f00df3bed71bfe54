"""Start-up failures of `agi-router serve` (issue #12): one line naming the thing and the fix, exit 2, and
fast — checked before the Whisper model loads (speech stays on in these settings: the checks come first)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import _free_port


def _serve(tmp_path: Path, *, agi: int = 0, metrics: int = 0, data_dir: Path | None = None) -> tuple[str, int, float]:
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        f'data_dir = "{data_dir or tmp_path / "var"}"\n[agi]\nport = {agi or _free_port()}\n'
        f"[metrics]\nport = {metrics or _free_port()}\n[ami]\nenabled = false\n"
    )
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(cfg)}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "agi_router", "serve"], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the router started instead of refusing")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines and "Traceback" not in r.stderr, r.stderr
    return lines[-1], r.returncode, time.monotonic() - t0


@pytest.fixture
def busy_port() -> object:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_the_fastagi_port_in_use(tmp_path: Path, busy_port: int) -> None:
    line, rc, took = _serve(tmp_path, agi=busy_port)
    assert rc == 2
    assert line.startswith("agi-router: agi.port: cannot listen for FastAGI on 127.0.0.1:") and str(busy_port) in line
    assert "another process listens there: stop it, or set another port" in line
    assert took < 8  # no model load first (it takes ~10 s on this machine)
    assert not (tmp_path / "var" / "models").exists()


def test_the_metrics_port_in_use_is_refused_before_fastagi_listens(tmp_path: Path, busy_port: int) -> None:
    line, rc, took = _serve(tmp_path, metrics=busy_port)
    assert rc == 2 and line.startswith("agi-router: metrics.port: cannot listen for metrics") and took < 8


def test_a_data_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line, rc, took = _serve(tmp_path, data_dir=blocker / "var")
    assert rc == 2 and took < 8
    assert line.startswith(f"agi-router: data_dir: the data directory {blocker / 'var'} is not usable:")
    assert "create it writable for this user, or set data_dir" in line


def test_a_directory_database_that_cannot_be_opened(tmp_path: Path) -> None:
    var = tmp_path / "var"
    (var / "directory.sqlite3").mkdir(parents=True)  # a folder where the SQLite file should be
    line, rc, _ = _serve(tmp_path, data_dir=var)
    assert rc == 2
    assert line.startswith(f"agi-router: {var / 'directory.sqlite3'}: cannot open the directory database:")


def test_version_and_usage_say_what_to_type() -> None:
    v = subprocess.run([sys.executable, "-m", "agi_router", "--version"], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.strip().startswith("agi-router ")
    u = subprocess.run([sys.executable, "-m", "agi_router", "directory"], capture_output=True, text=True)
    assert u.returncode == 2 and "ACTION" in u.stderr and "dcmd" not in u.stderr


def test_config_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    bad = tmp_path / "bad-policy.toml"
    bad.write_text('[policy]\nid = "x"\n')
    cfg = tmp_path / "router.toml"
    cfg.write_text(f'policy_file = "{bad}"\n')
    env = {k: v for k, v in os.environ.items() if k != "AGI_ROUTER_CONFIG"}
    for args in (["--config", str(cfg), "policy", "check"], ["policy", "check", "--config", str(cfg)],
                 ["policy", "check", f"--config={cfg}"]):  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "agi_router", *args], env=env, capture_output=True, text=True)
        assert r.returncode == 2 and str(bad) in r.stderr, (args, r.stderr)
