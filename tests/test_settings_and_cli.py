"""Settings files, and the real `agi-router serve` process: start, serve, reload, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agi_router.cli import main
from agi_router.config import load_settings
from agi_router.exceptions import ConfigError
from tests.conftest import FIXTURES
from tests.fakeasterisk import FakeChannel, run_call

ROOT = Path(__file__).resolve().parents[1]


def test_example_settings_file_is_the_defaults() -> None:
    s = load_settings(ROOT / "agi-router.example.toml")
    d = load_settings(None) if not os.environ.get("AGI_ROUTER_CONFIG") else None
    assert s.agi.port == 4573 and s.state.backend == "memory" and s.directory.backend == "sqlite"
    if d is not None:
        assert (s.agi, s.flow, s.state, s.directory, s.log, s.metrics) == (
            d.agi,
            d.flow,
            d.state,
            d.directory,
            d.log,
            d.metrics,
        )
        assert (s.audit_max_mb, s.audit_backups) == (d.audit_max_mb, d.audit_backups)
        assert (s.speech, s.understanding, s.sampling) == (d.speech, d.understanding, d.sampling)


def test_understanding_and_sampling_settings_are_checked(tmp_path: Path) -> None:
    from agi_router.exceptions import ConfigError

    bad = tmp_path / "bad.toml"
    for text, key in (
        ("[understanding]\nqueue_confidence = 1.5\n", "understanding.queue_confidence"),
        ("[sampling]\nrate = -0.1\n", "sampling.rate"),
        ("[sampling]\nretention = 3\n", "sampling"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_settings(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agi]\nport = 70000\n", "agi.port: must be between 0 and 65535"),
        ("[agi]\nprot = 4573\n", "agi: unknown key(s): prot"),
        ('[state]\nbackend = "mongo"\n', "state.backend: must be one of memory, redis"),
        ('[directory]\nbackend = "http"\n', "directory.http_url: backend = 'http' needs"),
        ("[flow]\ndecision_budget_ms = 50\ndirectory_wait_ms = 60\n", "flow.directory_wait_ms: must be shorter"),
        ("[log]\njson = 'yes'\n", "log.json: must be true or false"),
        ("audit_backups = -1\n", "audit_backups: must be between 0 and 10000"),
        ("[metrics]\nport = 'x'\n", "metrics.port"),
        ("port = = 1", "not valid TOML"),
    ],
)
def test_settings_errors(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(p)
    assert message in str(info.value) and str(info.value).startswith(str(p))


def test_cli_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.toml"
    p.write_text("[agi]\nport = -1\n")
    assert main(["--config", str(p), "policy", "check"]) == 2
    assert "agi.port" in capsys.readouterr().err


def test_cli_policy_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    assert capsys.readouterr().out.startswith("ok: 3646-2024@1+")
    bad = tmp_path / "p.toml"
    bad.write_text((FIXTURES / "policy-mini.toml").read_text().replace("window_minutes = 10", "window_minutes = -3"))
    assert main(["policy", "check", str(bad)]) == 2
    assert "repeat.window_minutes: must be between" in capsys.readouterr().err


def test_cli_pseudonym_is_stable_and_hides_the_number(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGI_ROUTER_PSEUDONYM_KEY", "k" * 32)
    assert main(["pseudonym", "06 12 34 56 78"]) == 0
    assert main(["pseudonym", "+33612345678"]) == 0
    a, b = capsys.readouterr().out.split()
    assert a == b and a.startswith("c-") and "612345678" not in a
    assert main(["pseudonym", "12"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 45.0) -> None:
    # the router loads its model and binds in ~2-10 s; a loaded 2-core CI box has taken over 20 s
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"router exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("router did not listen")


@pytest.mark.timeout(120)
async def test_serve_process_end_to_end(tmp_path: Path) -> None:
    """`agi-router serve` on embedded defaults: a call is routed, a bad policy file on SIGHUP is
    refused while calls keep flowing, a good one replaces it, SIGTERM stops it cleanly."""
    port, metrics_port = _free_port(), _free_port()
    policy = tmp_path / "policy.toml"
    policy.write_text((ROOT / "agi_router/data/policy-3646-2024.toml").read_text())
    cfg = tmp_path / "router.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\npolicy_file = "{policy}"\n[agi]\nport = {port}\n'
        f"[metrics]\nport = {metrics_port}\n"
    )
    csv = tmp_path / "accounts.csv"
    csv.write_text("number,last_login\n0612345678,2026-10-01\n")
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(cfg)}
    env.pop("AGI_ROUTER_PSEUDONYM_KEY", None)
    subprocess.run(  # noqa: ASYNC221 - a one-shot CLI call before the router starts
        [sys.executable, "-m", "agi_router", "directory", "import", str(csv)], env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - the router under test, a real separate process
        [sys.executable, "-m", "agi_router", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await _wait_port(port, proc)
        ch = await run_call("127.0.0.1", port, FakeChannel(args=["carte_vitale_perdue"]))
        assert ch.variables["ROUTER_DONE"] == "1" and ch.variables["ROUTER_ACTION"] in ("queue", "closed")
        label = ch.variables["ROUTER_POLICY"]
        assert label.startswith("3646-2024@1+")
        from tests.test_metrics import http_get, samples, value

        status, _h, body = await http_get("127.0.0.1", metrics_port, "/metrics")
        m = samples(body.decode())
        assert status == 200 and value(m, "agi_router_calls_total", result="decided") == 1
        assert [dict(labels)["version"] for name, labels in m if name == "agi_router_policy_info"] == [label]
        assert "612345678" not in body.decode()
        status, _h, body = await http_get("127.0.0.1", metrics_port, "/healthz")
        assert status == 200 and b'"degraded"' in body  # no Asterisk here: AMI is down

        policy.write_text("[policy]\nid = 'broken'\n")
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        ch = await run_call("127.0.0.1", port, FakeChannel(args=["carte_vitale_perdue"], uniqueid="2"))
        assert ch.variables["ROUTER_POLICY"] == label  # the bad file did not replace the running policy

        policy.write_text(
            (ROOT / "agi_router/data/policy-3646-2024.toml").read_text().replace('version = "1"', 'version = "2"')
        )
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        ch = await run_call("127.0.0.1", port, FakeChannel(args=["carte_vitale_perdue"], uniqueid="3"))
        assert ch.variables["ROUTER_POLICY"].startswith("3646-2024@2+")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    text = err.decode()
    assert proc.returncode == 0, text
    assert "policy reload refused" in text and "policy reloaded" in text
    assert "0612345678" not in text and "612345678" not in text  # no clear number in the logs


def test_router_wiring_live_audio_on_and_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agi_router.app import build_router
    from agi_router.callflow.capture import DTMFMenuCapture, HintCapture
    from agi_router.callflow.speech import SpeechCapture

    cfg = tmp_path / "s.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "var"}"\n[agi]\nport = 0\n')
    router = build_router(load_settings(cfg))
    sources = router.flow.capture.sources  # type: ignore[attr-defined]
    assert [type(s) for s in sources] == [HintCapture, SpeechCapture, DTMFMenuCapture]
    assert router.ami is not None and router.speech is not None
    assert router.speech.config.attempts == 2
    assert router.callbacks is not None and router.flow.callbacks is router.callbacks.store
    router.callbacks.store.close()
    router.speech.recognizer.close()  # type: ignore[attr-defined]
    cfg.write_text(f'data_dir = "{tmp_path / "var"}"\n[agi]\nport = 0\n[ami]\nenabled = false\n')
    router = build_router(load_settings(cfg))
    assert [type(s) for s in router.flow.capture.sources] == [HintCapture, DTMFMenuCapture]  # type: ignore[attr-defined]
    assert router.callbacks is None and router.flow.callbacks is None  # no AMI: no callback offered
    assert "live audio disabled: it needs AMI" in caplog.text


def test_every_setting_is_in_the_example_file_with_its_default() -> None:
    """The settings are declared once (the dataclasses of agi_router/config.py, read by load_settings): the
    example file documents every one of them, and with exactly the default value (#24)."""
    import dataclasses
    import tomllib

    from agi_router.config import Settings

    example = tomllib.loads((ROOT / "agi-router.example.toml").read_text())
    defaults = Settings()
    skip = {"source", "key_file"}  # where the settings came from; the key's path is documented in a comment
    missing, wrong = [], []
    for f in dataclasses.fields(Settings):
        value = getattr(defaults, f.name)
        if f.name in skip:
            continue
        if dataclasses.is_dataclass(value):
            table = example.get(f.name)
            if not isinstance(table, dict):
                missing.append(f"[{f.name}]")
                continue
            for g in dataclasses.fields(value):
                if g.name not in table:
                    missing.append(f"[{f.name}] {g.name}")
                    continue
                loaded = getattr(load_settings(ROOT / "agi-router.example.toml"), f.name)
                if getattr(loaded, g.name) != getattr(value, g.name):
                    wrong.append(f"[{f.name}] {g.name}")
        elif f.name not in example and value not in (None, ""):
            missing.append(f.name)
    assert not missing, f"settings not in agi-router.example.toml: {missing}"
    assert not wrong, f"example values that are not the defaults: {wrong}"
