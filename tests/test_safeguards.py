"""Safeguards as policy (issue #14, first part): `[safeguards]` in a policy file and the bundled
`policy-3646-safeguarded.toml`. Property tests over generated call facts (hypothesis, derandomised) show that
each safeguard changes exactly the decisions it should and no other; the daily cap is shown through the real
call flow (FastAGI, caller memory)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy, Safeguards, default_policy_path, parse_policy
from agi_router.policy.engine import decide
from agi_router.policy.model import AccountFacts, Action, CallFacts, MotiveFacts, PastCall, QueueSnapshot

CATALOGUE = Catalogue.load()
DATA = default_policy_path().parent


def _open(name: str) -> Policy:
    text = (DATA / name).read_text().replace("[hours]\nenabled = true", "[hours]\nenabled = false")
    return parse_policy(text, file=name, catalogue=CATALOGUE)


P2024 = _open("policy-3646-2024.toml")
SAFE = _open("policy-3646-safeguarded.toml")
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
DEFLECTABLE = sorted(P2024.deflect_motives)
OTHER = sorted(m for m in CATALOGUE.motives if m not in P2024.deflect_motives)[:10]
FLAGS = ["css", "ald", "handicap", "accompagnement", "no_internet", "fragile", "pro", "x"]
FUZZ = settings(max_examples=400, derandomize=True, deadline=None)


@st.composite
def call_facts(draw: st.DrawFn) -> CallFacts:
    motive_id = draw(st.one_of(st.sampled_from(DEFLECTABLE), st.sampled_from(OTHER), st.none()))
    account = draw(
        st.sampled_from(
            [
                AccountFacts(True, True, date(2026, 11, 20)),  # active
                AccountFacts(True, True, date(2024, 1, 10)),  # inactive
                AccountFacts(True, False),  # none
                AccountFacts.unknown(),
            ]
        )
    )
    account = dataclasses.replace(account, flags=frozenset(draw(st.lists(st.sampled_from(FLAGS), max_size=2))))
    history = tuple(
        PastCall(NOW - timedelta(minutes=m), motive_id or "x", a)
        for m, a in sorted(
            draw(st.lists(st.tuples(st.integers(1, 30), st.sampled_from(list(Action))), max_size=3)), reverse=True
        )
    )
    return CallFacts(
        call_id="1.1",
        caller=draw(st.sampled_from(["c-" + "a" * 24, "c-" + "b" * 24])),
        withheld=draw(st.booleans()),
        account=account,
        motive=MotiveFacts(
            motive_id,
            draw(st.sampled_from([1.0, 0.95, 0.5])),
            draw(st.sampled_from(["dtmf", "speech", "variable"])),
            human_requested=draw(st.booleans()) and draw(st.booleans()),
            language=draw(st.sampled_from(["", "fr", "en", "ar"])),
            failed_captures=draw(st.integers(0, 3)),
        ),
        now=NOW,
        history=history,
        queues=draw(st.sampled_from([{}, {"accueil": QueueSnapshot("accueil", waiting=90, logged_in_agents=2)}])),
        sms_capable=draw(st.booleans()),
        ended_today=draw(st.integers(0, 4)),
    )


def _with(**kw: object) -> Policy:
    return dataclasses.replace(P2024, safeguards=Safeguards(**kw))  # type: ignore[arg-type]


@FUZZ
@given(call_facts())
def test_the_safeguarded_policy_only_ever_turns_a_router_ended_call_into_the_queue(facts: CallFacts) -> None:
    before, after = decide(P2024, facts), decide(SAFE, facts)
    if not before.action.hangs_up:
        if after.rule == "safeguard.failed_capture":  # the same person, said why
            assert before.rule == "motive.none"
            before = dataclasses.replace(before, rule=after.rule, reasons=after.reasons)
        assert after == dataclasses.replace(before, policy_version=after.policy_version)  # nothing else moves
    elif after != dataclasses.replace(before, policy_version=after.policy_version):
        assert after.action is Action.QUEUE and after.rule.startswith("safeguard.")
        assert after.queue == SAFE.queue_for(before.motive_id) and after.rule in after.reasons
    exempt = bool(facts.account.flags & SAFE.safeguards.exempt_flags)
    if exempt or facts.ended_today >= SAFE.safeguards.daily_cap:
        assert not after.action.hangs_up  # never ends the call of an exempt caller, nor beyond the cap
    if facts.motive.language not in ("", "fr"):
        assert after.action is not Action.DEFLECT  # never a French message to someone heard in another language


@FUZZ
@given(call_facts())
def test_each_safeguard_changes_exactly_the_decisions_it_should(facts: CallFacts) -> None:
    base = decide(P2024, facts)
    ends = base.action.hangs_up
    foreign = facts.motive.language not in ("", "fr")
    flags, who = frozenset({"css", "ald"}), "c-" + "a" * 24
    cases = {
        "exempt_flag": (_with(exempt_flags=flags), ends and bool(facts.account.flags & flags)),
        "exempt_caller": (_with(exempt_callers=frozenset({who})), ends and facts.caller == who),
        "daily_cap": (_with(daily_cap=2), ends and facts.ended_today >= 2),
        "dtmf_fallback": (_with(dtmf_fallback=True), base.action is Action.DEFLECT and facts.motive.method == "dtmf"),
        "no_alternative": (
            _with(require_alternative=True),
            ends and not (base.action is Action.DEFLECT and base.sms_template),
        ),
        "other_language": (_with(other_language=True), base.action is Action.DEFLECT and foreign),
    }
    for name, (policy, should) in cases.items():
        d = decide(policy, facts)
        changed = d.action != base.action
        assert changed == should, (name, base, d)
        if changed:
            assert (d.action, d.rule) == (Action.QUEUE, f"safeguard.{name}")
    # the failed-capture safeguard acts in the dialogue (no further try); the decision only says why: the same
    # person as rule motive.none, and nothing else moves
    d = decide(_with(person_after_failed_captures=2), facts)
    relabelled = base.rule == "motive.none" and not facts.motive.motive_id and facts.motive.failed_captures >= 2
    assert d.rule == ("safeguard.failed_capture" if relabelled else base.rule)
    assert (d.action, d.queue, d.priority) == (base.action, base.queue, base.priority)


def test_the_bundled_policies_side_by_side() -> None:
    assert not P2024.safeguards.enabled  # the faithful 2024 rules, unchanged
    g = SAFE.safeguards
    assert g.enabled and g.daily_cap == 2 and g.require_alternative and g.dtmf_fallback
    assert g.other_language and g.person_after_failed_captures == 2 and SAFE.language == "fr"
    assert {"css", "ald", "handicap", "accompagnement"} <= g.exempt_flags
    assert SAFE.label.startswith("3646-2024-safeguarded@1+")


@pytest.mark.parametrize(
    "section, message",
    [
        ('exempt_callers = ["0612345678"]', "a pseudonym c-<24 hex>"),
        ('exempt_flags = ["CSS"]', "directory flags are lower-case"),
        ("daily_cap = 1000", "daily_cap"),
        ("person_after_failed_captures = 9", "person_after_failed_captures"),
        ('other_language = "yes"', "other_language"),
        ("colour = 1", "unknown key(s): colour"),
    ],
)
def test_bad_safeguards_are_refused_with_the_key(section: str, message: str) -> None:
    from agi_router.exceptions import PolicyError

    text = default_policy_path().read_text() + f"\n[safeguards]\n{section}\n"
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")) as ei:
        parse_policy(text, catalogue=CATALOGUE)
    assert (ei.value.key or "").startswith("safeguards")


async def test_the_daily_cap_through_the_call_flow(tmp_path: Path, pseudonymizer: object) -> None:
    """Three simple requests in a day from an active account holder: two deflected, the third one to a person."""
    from agi_router.agi.server import AGIServer, AGIServerConfig
    from agi_router.callflow.capture import HintCapture
    from agi_router.callflow.flow import CallFlow, PolicyHolder
    from agi_router.state.memory import InMemoryCallerMemory
    from tests.doubles import StubDirectory
    from tests.fakeasterisk import FakeChannel, run_call

    policy = dataclasses.replace(P2024, safeguards=Safeguards(daily_cap=2))
    flow = CallFlow(
        policy=PolicyHolder(policy),
        directory=StubDirectory(everyone=AccountFacts(True, True, date(2026, 11, 20))),
        memory=InMemoryCallerMemory(),
        pseudonymizer=pseudonymizer,  # type: ignore[arg-type]
        capture=HintCapture(),
        clock=lambda: NOW,
    )
    server = AGIServer({"3646": flow}, AGIServerConfig(port=0))
    await server.start()
    rules = []
    try:
        for motive in DEFLECTABLE[:3]:  # three different motives: no repeat rule, only the cap
            ch = await run_call("127.0.0.1", server.sockets[0][1], FakeChannel(args=[motive]))
            await flow.drain()
            rules.append(ch.variables["ROUTER_RULE"])
    finally:
        await server.close()
    assert rules == ["deflect.simple", "deflect.simple", "safeguard.daily_cap"]


def test_cohorts_are_a_closed_set_computed_from_the_facts() -> None:
    from agi_router.policy.cohorts import COHORTS, cohorts_of

    base = CallFacts("1", "c-" + "a" * 24, False, AccountFacts(True, True, date(2026, 11, 20)), MotiveFacts("x"), NOW)
    assert cohorts_of(base) == ()
    every = dataclasses.replace(
        base,
        account=AccountFacts(True, False, flags=frozenset({"ald", "pro"})),
        motive=MotiveFacts("x", 1.0, "dtmf", language="ar", failed_captures=2),
        history=(PastCall(NOW - timedelta(minutes=5), "x", Action.DEFLECT),),
    )
    assert cohorts_of(every) == COHORTS
    assert cohorts_of(dataclasses.replace(base, motive=MotiveFacts("x", language="fr"))) == ()
    assert cohorts_of(dataclasses.replace(base, motive=MotiveFacts("x", language="fr")), line_language="en") == (
        "other_language",
    )
