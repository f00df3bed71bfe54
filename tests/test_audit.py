"""The audit trail: one JSON line per call through FastAGI, no clear number, rotation, `audit explain`."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from agi_router.agi.server import AGIServer, AGIServerConfig
from agi_router.audit import AuditLog, explain, find
from agi_router.callflow.capture import HintCapture
from agi_router.callflow.flow import CallFlow, PolicyHolder
from agi_router.cli import main
from agi_router.policy.config import Policy
from agi_router.policy.model import AccountFacts
from agi_router.privacy import Pseudonymizer
from agi_router.state.memory import InMemoryCallerMemory
from tests.doubles import StubDirectory
from tests.fakeasterisk import FakeChannel, run_call


async def test_every_decision_is_audited_and_explained(
    tmp_path: Path,
    mini_policy: Policy,
    pseudonymizer: Pseudonymizer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audit = AuditLog(tmp_path / "var" / "audit" / "decisions.jsonl")
    now = [datetime(2026, 11, 24, 10, 0, tzinfo=UTC)]
    flow = CallFlow(
        policy=PolicyHolder(mini_policy),
        directory=StubDirectory({"+33612345678": AccountFacts(True, True, date(2026, 10, 1), frozenset({"ald"}))}),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,
        capture=HintCapture(),
        clock=lambda: now[0],
        on_result=audit.write,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        port = server.sockets[0][1]
        for i in range(3):
            await run_call("127.0.0.1", port, FakeChannel(args=["attestation_droits"], uniqueid=f"call.{i}"))
            await flow.drain()
            now[0] += timedelta(minutes=3)
    finally:
        await server.close()
        audit.close()
    text = (tmp_path / "var" / "audit" / "decisions.jsonl").read_text()
    assert "612345678" not in text  # pseudonyms only
    recs = [json.loads(x) for x in text.splitlines()]
    assert [r["decision"]["rule"] for r in recs] == ["deflect.simple", "repeat.hangup", "repeat.priority"]
    third = recs[2]
    assert [h["action"] for h in third["inputs"]["history"]] == ["deflect", "hangup"]
    assert third["inputs"]["account"] == {"known": True, "exists": True, "last_login": "2026-10-01", "flags": ["ald"]}
    assert third["motive"]["id"] == "attestation_droits" and third["latency_ms"] >= 0
    assert third["decision"]["policy"].startswith("test@1+")
    text3 = explain(next(find(tmp_path / "var" / "audit" / "decisions.jsonl", "call.2")))
    assert "rule repeat.priority" in text3 and "2 call(s)" in text3 and "priority 10" in text3
    assert "repeat_caller" in third["cohorts"] and "repeat_caller" in text3.split("cohorts ")[1]
    heard = {**third, "motive": {**third["motive"], "language": "en", "failed_captures": 1}}
    assert "heard in en, after 1 failed capture(s)" in explain(heard)

    monkeypatch.setenv("AGI_ROUTER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("AGI_ROUTER_CONFIG", raising=False)
    assert main(["audit", "explain", "call.0"]) == 0
    assert "rule deflect.simple" in capsys.readouterr().out
    assert main(["audit", "explain", "nope"]) == 1


def test_rotation_keeps_records_findable(tmp_path: Path) -> None:
    from agi_router.callflow.flow import CallResult

    log = AuditLog(tmp_path / "a.jsonl", max_bytes=2000, backups=3)
    for i in range(100):
        log.write(CallResult(call_id=f"c{i}", caller="c-x"))
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["a.jsonl", "a.jsonl.1", "a.jsonl.2", "a.jsonl.3"]  # retention: 3 old files
    assert next(find(tmp_path / "a.jsonl", "c99"))["call_id"] == "c99"
    assert list(find(tmp_path / "a.jsonl", "c0")) == []  # rotated out


def test_a_full_disk_loses_no_audit_line(tmp_path: Path) -> None:
    """ENOSPC on the trail: the lines wait, in order, and land as soon as the disk takes writes again."""
    import errno

    from agi_router.audit import AuditLog

    audit = AuditLog(tmp_path / "audit" / "decisions.jsonl")
    handler = audit._handler
    real_open = handler._open
    full = [True]

    class FullDisk:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

        def seek(self, *args: int) -> int:
            return 0

        def tell(self) -> int:
            return 0

    handler.stream.close()
    handler.stream = FullDisk()  # type: ignore[assignment]
    handler._open = lambda: FullDisk() if full[0] else real_open()  # type: ignore[method-assign,assignment]
    for i in range(3):
        audit._logger.info(f'{{"n": {i}}}')
    assert (audit.pending, audit.failures, audit.dropped) == (3, 3, 0)
    full[0] = False  # space again
    audit._logger.info('{"n": 3}')
    audit.close()
    lines = (tmp_path / "audit" / "decisions.jsonl").read_text().splitlines()
    assert lines == ['{"n": 0}', '{"n": 1}', '{"n": 2}', '{"n": 3}'] and audit.pending == 0
