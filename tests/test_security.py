"""Security pass (issue #12): what listens where by default, the AMI secret, key and store file modes.
(No caller number in logs, metrics or audit after a busy run: tests/test_loadtest.py.)"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from pathlib import Path

import pytest

from agi_router.asterisk_setup import ami_secret
from agi_router.config import AMISettings, Settings
from agi_router.exceptions import ConfigError
from agi_router.privacy import load_or_create_key

ROOT = Path(__file__).resolve().parents[1]


def _loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def test_everything_the_router_opens_is_on_loopback_by_default() -> None:
    s = Settings()
    listening = {
        "agi.host": s.agi.host,
        "metrics.host": s.metrics.host,
        "speech.bind_host": s.speech.bind_host,
        "ami.host (where it connects)": s.ami.host,
    }
    assert {k: v for k, v in listening.items() if not _loopback(v)} == {}


def test_everything_the_shipped_asterisk_config_opens_is_on_loopback() -> None:
    manager = (ROOT / "asterisk" / "manager.conf").read_text()
    assert re.search(r"^bindaddr = 127\.0\.0\.1$", manager, re.M)
    pjsip = (ROOT / "asterisk" / "pjsip.conf").read_text()
    binds = re.findall(r"^bind = (\S+)$", pjsip, re.M)
    assert binds and all(b.startswith("127.0.0.1:") for b in binds)
    assert "secret" not in "".join(line.split(";")[0] for line in manager.splitlines())  # no secret shipped


@pytest.mark.parametrize("host, refused", [("127.0.0.1", False), ("10.0.0.5", True), ("pbx.example.org", True)])
def test_a_placeholder_ami_secret_is_refused_off_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, refused: bool
) -> None:
    monkeypatch.delenv("AGI_ROUTER_AMI_SECRET", raising=False)
    settings = Settings(data_dir=tmp_path, ami=AMISettings(host=host, secret="change-me-ami"))
    if refused:
        with pytest.raises(ConfigError, match="well-known placeholder and AMI is not on loopback"):
            ami_secret(settings)
    else:
        assert ami_secret(settings) == "change-me-ami"


def test_generated_secrets_are_private_to_the_router_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGI_ROUTER_AMI_SECRET", raising=False)
    old = os.umask(0o022)  # a permissive umask must not leak the keys
    try:
        load_or_create_key(tmp_path / "pseudonym.key")
        ami_secret(Settings(data_dir=tmp_path))
    finally:
        os.umask(old)
    for name in ("pseudonym.key", "ami.secret"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"


def test_stores_and_audit_trail_are_created_private(tmp_path: Path) -> None:
    from agi_router.audit import AuditLog
    from agi_router.callbacks.store import CallbackStore
    from agi_router.directory.sqlite import import_csv
    from agi_router.privacy import Pseudonymizer

    old = os.umask(0o022)
    try:
        csv_file = tmp_path / "in.csv"
        csv_file.write_text("number,last_login,flags\n0612345678,2026-10-01,\n")
        import_csv(csv_file, tmp_path / "directory.sqlite3", Pseudonymizer(b"k" * 20))
        CallbackStore(tmp_path / "callbacks.sqlite3", b"k" * 20).close()
        audit = AuditLog(tmp_path / "audit" / "decisions.jsonl", max_bytes=200, backups=2)
        for _ in range(3):  # rotations too
            audit._logger.info("x" * 150)
        audit.close()
    finally:
        os.umask(old)
    files = [tmp_path / "directory.sqlite3", tmp_path / "callbacks.sqlite3", *(tmp_path / "audit").glob("decisions*")]
    assert len(files) >= 4
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files if stat.S_IMODE(f.stat().st_mode) & 0o077} == {}
