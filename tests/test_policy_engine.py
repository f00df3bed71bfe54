"""The pure decision core: the 2024 rules, rule by rule, and their edges."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import pytest

from agi_router.policy.config import Policy, parse_policy
from agi_router.policy.engine import account_is_active, consecutive_router_endings, decide, is_open
from agi_router.policy.model import (
    AccountFacts,
    Action,
    CallFacts,
    MotiveFacts,
    PastCall,
    QueueSnapshot,
    Segment,
)
from tests.conftest import FIXTURES

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # a Tuesday, 11:00 in Paris
ACTIVE = AccountFacts(known=True, exists=True, last_login=date(2026, 9, 1))
STALE = AccountFacts(known=True, exists=True, last_login=date(2025, 1, 1))


def facts(
    motive: str | None = "attestation_droits",
    account: AccountFacts = ACTIVE,
    history: tuple[PastCall, ...] = (),
    now: datetime = NOW,
    **kw: object,
) -> CallFacts:
    m = kw.pop("motive_facts", None) or MotiveFacts(motive, 1.0, "dtmf")
    kw.setdefault("sms_capable", True)
    return CallFacts(
        call_id="1.1",
        caller="c-abc",
        withheld=bool(kw.pop("withheld", False)),
        account=account,
        motive=m,
        now=now,
        history=history,
        **kw,  # type: ignore[arg-type]
    )


def test_active_account_simple_motive_is_deflected_with_sms(mini_policy: Policy) -> None:
    d = decide(mini_policy, facts())
    assert d.action is Action.DEFLECT
    assert d.rule == "deflect.simple"
    assert d.queue is None
    assert d.prompts == (
        "router/deflect-intro",
        "router/online/attestation_droits",
        "router/sms-sent",
        "router/goodbye",
    )
    assert d.sms_template and "ameli" in d.sms_template
    assert d.segment is Segment.ACTIVE
    assert d.policy_version.startswith("test@1+")
    assert d.reasons[0] == "segment.account_active" and d.reasons[-1] == "deflect.simple"


def test_the_2024_sequence_deflect_hangup_priority(mini_policy: Policy) -> None:
    d1 = decide(mini_policy, facts())
    assert d1.action is Action.DEFLECT
    h1 = (PastCall(NOW, "attestation_droits", d1.action),)
    d2 = decide(mini_policy, facts(history=h1, now=NOW + timedelta(minutes=3)))
    assert (d2.action, d2.rule) == (Action.HANGUP, "repeat.hangup")
    h2 = (*h1, PastCall(NOW + timedelta(minutes=3), "attestation_droits", d2.action))
    d3 = decide(mini_policy, facts(history=h2, now=NOW + timedelta(minutes=6)))
    assert (d3.action, d3.rule) == (Action.PRIORITY, "repeat.priority")
    assert d3.priority == 10 and d3.queue == "droits"
    # after the agent, the chain is broken: a 4th call is a first call again
    h3 = (*h2, PastCall(NOW + timedelta(minutes=6), "attestation_droits", d3.action))
    assert decide(mini_policy, facts(history=h3, now=NOW + timedelta(minutes=30))).action is Action.DEFLECT


def test_repeat_outside_window_is_a_new_first_call(mini_policy: Policy) -> None:
    h = (PastCall(NOW, "attestation_droits", Action.DEFLECT),)
    assert decide(mini_policy, facts(history=h, now=NOW + timedelta(minutes=10, seconds=1))).action is Action.DEFLECT
    assert decide(mini_policy, facts(history=h, now=NOW + timedelta(minutes=10))).action is Action.HANGUP


def test_repeat_needs_the_same_motive(mini_policy: Policy) -> None:
    # history is per (caller, motive) in the store, but a mixed history must not match either
    h = (PastCall(NOW, "releve_remboursements", Action.DEFLECT),)
    assert decide(mini_policy, facts(history=h, now=NOW + timedelta(minutes=1))).action is Action.DEFLECT


def test_priority_chain_broken_by_a_long_gap(mini_policy: Policy) -> None:
    h = (
        PastCall(NOW - timedelta(minutes=30), "attestation_droits", Action.DEFLECT),
        PastCall(NOW - timedelta(minutes=5), "attestation_droits", Action.HANGUP),
    )
    assert consecutive_router_endings(mini_policy, h, NOW) == 1
    assert decide(mini_policy, facts(history=h)).action is Action.HANGUP


def test_history_from_the_future_is_ignored(mini_policy: Policy) -> None:
    h = (PastCall(NOW + timedelta(minutes=1), "attestation_droits", Action.DEFLECT),)
    assert decide(mini_policy, facts(history=h)).action is Action.DEFLECT


def test_queue_outcome_breaks_the_chain(mini_policy: Policy) -> None:
    h = (PastCall(NOW - timedelta(minutes=2), "attestation_droits", Action.QUEUE),)
    assert decide(mini_policy, facts(history=h)).action is Action.DEFLECT


@pytest.mark.parametrize(
    ("account", "segment"),
    [
        (AccountFacts.none(), Segment.NO_ACCOUNT),
        (AccountFacts.unknown(), Segment.UNKNOWN),
        (STALE, Segment.INACTIVE),
        (AccountFacts(known=True, exists=True, last_login=None), Segment.NO_ACCOUNT),
    ],
)
def test_no_active_account_goes_to_the_skill_queue(
    mini_policy: Policy, account: AccountFacts, segment: Segment
) -> None:
    d = decide(mini_policy, facts(account=account))
    assert (d.action, d.queue, d.rule, d.segment) == (Action.QUEUE, "droits", "queue.skill", segment)
    assert "deflect.skipped_account" in d.reasons


def test_withheld_caller_ignores_history(mini_policy: Policy) -> None:
    h = (PastCall(NOW, "attestation_droits", Action.DEFLECT), PastCall(NOW, "attestation_droits", Action.HANGUP))
    d = decide(mini_policy, facts(account=AccountFacts.none(), history=h, withheld=True))
    assert (d.action, d.segment) == (Action.QUEUE, Segment.WITHHELD)


def test_non_deflectable_motive_goes_to_its_queue(mini_policy: Policy) -> None:
    d = decide(mini_policy, facts("carte_vitale_perdue"))
    assert (d.action, d.queue, d.priority) == (Action.QUEUE, "droits", 0)


@pytest.mark.parametrize(
    ("motive_facts", "rule"),
    [
        (MotiveFacts(None, 0.0, "dtmf"), "motive.none"),
        (MotiveFacts(None, 1.0, "dtmf", human_requested=True), "motive.human"),
        (MotiveFacts("conseiller", 0.9, "speech"), "motive.human"),
        (MotiveFacts("multi_demandes", 0.9, "speech"), "motive.multi"),
        (MotiveFacts("no_such_motive", 1.0, "variable"), "motive.none"),
    ],
)
def test_human_paths(mini_policy: Policy, motive_facts: MotiveFacts, rule: str) -> None:
    d = decide(mini_policy, facts(motive_facts=motive_facts))
    assert (d.action, d.queue, d.rule) == (Action.QUEUE, "accueil", rule)


def test_unknown_motive_id_is_flagged(mini_policy: Policy) -> None:
    d = decide(mini_policy, facts(motive_facts=MotiveFacts("no_such_motive", 1.0, "variable")))
    assert "motive.unknown_id" in d.reasons
    assert d.motive_id == "unknown"  # a closed value: it becomes a metric label and ROUTER_MOTIVE


def test_low_confidence_is_not_deflected(mini_policy: Policy) -> None:
    p = dataclasses.replace(mini_policy, deflect_min_confidence=0.8)
    d = decide(p, facts(motive_facts=MotiveFacts("attestation_droits", 0.7, "speech")))
    assert d.action is Action.QUEUE and "deflect.skipped_confidence" in d.reasons


def test_saturation_dissuades_only_on_fresh_data(mini_policy: Policy) -> None:
    full = QueueSnapshot("droits", waiting=45, available_agents=0, logged_in_agents=3, estimated_wait_s=2000)
    d = decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": full}))
    assert (d.action, d.rule, d.callback_offer) == (Action.DISSUADE, "queue.saturated", True)
    stale = dataclasses.replace(full, fresh=False)
    assert decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": stale})).action is Action.QUEUE
    long_wait = QueueSnapshot("droits", waiting=3, available_agents=0, logged_in_agents=1, estimated_wait_s=1300)
    assert decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": long_wait})).action is Action.DISSUADE
    agents_free = dataclasses.replace(long_wait, available_agents=2)
    assert decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": agents_free})).action is Action.QUEUE


def test_no_agent_logged_in_is_not_saturation(mini_policy: Policy) -> None:
    """Issue #9: a skill queue nobody is logged in to, even with nobody waiting, used to look saturated
    (estimated wait infinite): every caller heard the dissuasion and was offered a callback nobody could
    take. It goes to the default queue instead, with no message and no offer."""
    empty = QueueSnapshot("droits", waiting=0, available_agents=0, logged_in_agents=0, estimated_wait_s=1e9)
    staffed = QueueSnapshot("accueil", logged_in_agents=2, available_agents=1)
    d = decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": empty, "accueil": staffed}))
    assert (d.action, d.rule, d.queue, d.callback_offer, d.prompts) == (
        Action.QUEUE,
        "queue.unstaffed",
        "accueil",
        False,
        (),
    )
    assert "queue.default_unstaffed" not in d.reasons
    nobody = dataclasses.replace(staffed, logged_in_agents=0, available_agents=0)
    d = decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": empty, "accueil": nobody}))
    assert (d.action, d.queue, d.callback_offer) == (Action.QUEUE, "accueil", False)
    assert "queue.default_unstaffed" in d.reasons
    # stale data never reroutes; a crowded queue with nobody logged in is unstaffed, not saturated
    stale = dataclasses.replace(empty, fresh=False)
    assert decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": stale})).rule == "queue.skill"
    crowd = dataclasses.replace(empty, waiting=80)
    assert decide(mini_policy, facts("carte_vitale_perdue", queues={"droits": crowd})).rule == "queue.unstaffed"
    # the policy can keep callers on the skill queue (the dialplan then tries accueil on JOINUNAVAIL)
    keep = dataclasses.replace(mini_policy, unstaffed_reroute=False)
    d = decide(keep, facts("carte_vitale_perdue", queues={"droits": empty}))
    assert (d.action, d.rule, d.queue, d.callback_offer) == (Action.QUEUE, "queue.skill", "droits", False)


def test_priority_is_never_dissuaded(mini_policy: Policy) -> None:
    full = QueueSnapshot("droits", waiting=100)
    h = (
        PastCall(NOW - timedelta(minutes=4), "attestation_droits", Action.DEFLECT),
        PastCall(NOW - timedelta(minutes=2), "attestation_droits", Action.HANGUP),
    )
    assert decide(mini_policy, facts(history=h, queues={"droits": full})).action is Action.PRIORITY


def _with_hours(policy: Policy) -> Policy:
    text = (
        (FIXTURES / "policy-mini.toml")
        .read_text()
        .replace(
            "[hours]\nenabled = false",
            '[hours]\nenabled = true\nmon = "08:30-17:30"\ntue = "08:30-17:30"\nwed = "08:30-12:00, 13:30-17:30"\n'
            'thu = "08:30-17:30"\nfri = "08:30-17:30"\nholidays = ["2026-12-25"]\nclosed_prompts = ["router/closed"]',
        )
    )
    return parse_policy(text, catalogue=policy.catalogue)


@pytest.mark.parametrize(
    ("when", "open_"),
    [
        (datetime(2026, 11, 24, 7, 29, tzinfo=UTC), False),  # 08:29 Paris (UTC+1)
        (datetime(2026, 11, 24, 7, 30, tzinfo=UTC), True),  # 08:30
        (datetime(2026, 11, 24, 16, 29, tzinfo=UTC), True),  # 17:29
        (datetime(2026, 11, 24, 16, 30, tzinfo=UTC), False),  # 17:30
        (datetime(2026, 11, 25, 11, 30, tzinfo=UTC), False),  # Wednesday 12:30 lunch break
        (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), False),  # Saturday
        (datetime(2026, 12, 25, 10, 0, tzinfo=UTC), False),  # Christmas, a Friday
        (datetime(2026, 7, 7, 6, 45, tzinfo=UTC), True),  # summer time: 08:45 Paris (UTC+2)
    ],
)
def test_opening_hours(mini_policy: Policy, when: datetime, open_: bool) -> None:
    p = _with_hours(mini_policy)
    assert is_open(p, when) is open_
    d = decide(p, facts(now=when))
    assert (d.action is Action.CLOSED) is (not open_)
    if not open_:
        assert d.prompts == ("router/closed",) and d.rule == "hours.closed"


@pytest.mark.parametrize(
    ("last", "today", "active"),
    [
        (date(2026, 5, 24), date(2026, 11, 24), True),  # exactly 6 months
        (date(2026, 5, 23), date(2026, 11, 24), False),
        (date(2026, 2, 28), date(2026, 8, 31), True),  # Aug 31 - 6 months = Feb 28
        (date(2026, 2, 27), date(2026, 8, 31), False),
        (date(2025, 12, 1), date(2026, 5, 31), True),  # across a year
    ],
)
def test_six_calendar_months(mini_policy: Policy, last: date, today: date, active: bool) -> None:
    acc = AccountFacts(known=True, exists=True, last_login=last)
    assert account_is_active(mini_policy, acc, today) is active


def test_channel_variables(mini_policy: Policy) -> None:
    v = decide(mini_policy, facts()).channel_variables()
    assert v["ROUTER_ACTION"] == "deflect"
    assert v["ROUTER_PROMPTS"] == "router/deflect-intro&router/online/attestation_droits&router/sms-sent&router/goodbye"
    assert v["ROUTER_SMS"] == "1" and v["ROUTER_QUEUE"] == "" and v["ROUTER_RULE"] == "deflect.simple"
    assert "ROUTER_DONE" not in v  # written last by the call flow


def test_decide_is_deterministic(mini_policy: Policy) -> None:
    f = facts()
    assert decide(mini_policy, f) == decide(mini_policy, f)


def test_no_sms_announced_when_it_cannot_be_sent(mini_policy: Policy) -> None:
    d = decide(mini_policy, facts(sms_capable=False))
    assert d.action is Action.DEFLECT and d.sms_template is None
    assert "router/sms-sent" not in d.prompts
