"""Gradual rollout (issue #14): a share of callers decided by a candidate policy, sticky per pseudonym, the arm
in the audit trail and as a metric label; refused settings say why."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from agi_router.callflow.flow import PolicyHolder, arm_point
from agi_router.config import load_settings
from agi_router.exceptions import ConfigError
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import default_policy_path, parse_policy
from agi_router.policy.model import AccountFacts
from agi_router.privacy import WITHHELD

CATALOGUE = Catalogue.load()


def _open(name: str) -> object:
    text = (default_policy_path().parent / name).read_text()
    text = text.replace("[hours]\nenabled = true", "[hours]\nenabled = false")
    return parse_policy(text, catalogue=CATALOGUE)


CURRENT, CANDIDATE = _open("policy-3646-2024.toml"), _open("policy-3646-safeguarded.toml")


def test_the_split_is_sticky_and_close_to_its_share() -> None:
    holder = PolicyHolder(CURRENT, CANDIDATE, 0.1)  # type: ignore[arg-type]
    callers = [f"c-{i:024x}" for i in range(20_000)]
    arms = [holder.for_caller(c)[1] for c in callers]
    share = arms.count("candidate") / len(arms)
    assert 0.094 < share < 0.106, share  # binomial: 3 standard deviations is ±0.0064
    assert all(holder.for_caller(c)[1] == a for c, a in zip(callers[:500], arms[:500], strict=True))  # sticky
    assert holder.for_caller(WITHHELD) == (CURRENT, "current")
    assert all(0 <= arm_point(c) < 1 for c in callers[:100])
    # raising the share keeps everyone already on the candidate there
    wider = PolicyHolder(CURRENT, CANDIDATE, 0.3)  # type: ignore[arg-type]
    assert all(wider.for_caller(c)[1] == "candidate" for c, a in zip(callers, arms, strict=True) if a == "candidate")
    assert PolicyHolder(CURRENT).for_caller(callers[0]) == (CURRENT, "current")  # type: ignore[arg-type]


async def test_the_arm_decides_and_is_recorded(tmp_path: Path, pseudonymizer: object) -> None:
    from agi_router.agi.server import AGIServer, AGIServerConfig
    from agi_router.audit import AuditLog
    from agi_router.callflow.capture import HintCapture
    from agi_router.callflow.flow import CallFlow
    from agi_router.metrics import RouterMetrics
    from agi_router.state.memory import InMemoryCallerMemory
    from tests.doubles import StubDirectory
    from tests.fakeasterisk import FakeChannel, run_call

    holder = PolicyHolder(CURRENT, CANDIDATE, 0.5)  # type: ignore[arg-type]
    audit = AuditLog(tmp_path / "audit.jsonl")
    metrics = RouterMetrics()
    results = []

    def on_result(r: object) -> None:
        results.append(r)
        audit.write(r)  # type: ignore[arg-type]
        metrics.observe_call(r)  # type: ignore[arg-type]

    flow = CallFlow(
        policy=holder,
        directory=StubDirectory(everyone=AccountFacts(True, True, date(2026, 11, 20))),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,  # type: ignore[arg-type]
        capture=HintCapture(),
        clock=lambda: datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        on_result=on_result,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    try:
        for i in range(30):
            channel = FakeChannel(callerid=f"06120000{i:02d}", args=["attestation_droits"])
            await run_call("127.0.0.1", server.sockets[0][1], channel)
    finally:
        await server.close()
        audit.close()
    arms = [r.arm for r in results]
    assert {"current", "candidate"} <= set(arms)
    for r in results:
        expected = holder.for_caller(r.caller)
        assert (r.arm, r.decision.policy_version) == (expected[1], expected[0].label)
    logged = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [rec["arm"] for rec in logged] == arms
    from prometheus_client import generate_latest

    from tests.test_metrics import samples

    m = samples(generate_latest(metrics.registry).decode())
    by_arm = {a: sum(v for (name, labels), v in m.items() if name == "agi_router_policy_arm_decisions_total"
                     and dict(labels)["arm"] == a) for a in ("current", "candidate")}  # fmt: skip
    assert by_arm == {"current": arms.count("current"), "candidate": arms.count("candidate")}


@pytest.mark.parametrize(
    "text, message",
    [
        ("candidate_share = 0.1\n", "set candidate_policy_file too"),
        ('candidate_policy_file = "x.toml"\ncandidate_share = 1.5\n', "between 0 and 1"),
    ],
)
def test_bad_rollout_settings(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "router.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(p)


