"""Call outcomes: the router's decision joined with what AMI says happened next, one record per call."""

from __future__ import annotations

from agi_router.ami.protocol import Message
from agi_router.callflow.flow import CallResult
from agi_router.policy.model import Action, Decision, Segment
from agi_router.queues.outcomes import CallOutcome, OutcomeTracker


def msg(**kw: str) -> Message:
    return Message(list(kw.items()))


def result(call_id: str, action: Action | None, queue: str | None = "droits", *, hung_up: bool = False) -> CallResult:
    d = None
    if action is not None:
        d = Decision(
            action=action,
            queue=queue,
            priority=0,
            rule=f"rule.{action.value}",
            reasons=(),
            policy_version="p@1",
            segment=Segment.ACTIVE,
            motive_id="carte_vitale_perdue",
        )
    return CallResult(call_id=call_id, caller="c-x", decision=d, hung_up=hung_up)


def tracker() -> tuple[OutcomeTracker, list[CallOutcome], list[float]]:
    out: list[CallOutcome] = []
    now = [100.0]
    return OutcomeTracker(out.append, clock=lambda: now[0], linger_s=3600), out, now


def test_answered_after_waiting() -> None:
    t, out, now = tracker()
    t.on_result(result("u1", Action.QUEUE))
    now[0] = 101
    t.on_join(msg(Event="QueueCallerJoin", Queue="droits", Uniqueid="u1"))
    now[0] = 160
    t.on_connect(msg(Event="AgentConnect", Queue="droits", Uniqueid="u1", HoldTime="59"))
    assert out == []
    now[0] = 400
    t.on_hangup(msg(Event="Hangup", Uniqueid="u1"))
    (o,) = out
    assert (o.outcome, o.queue, o.wait_s, o.rule, o.segment, o.caller) == (
        "answered",
        "droits",
        59.0,
        "rule.queue",
        "account_active",
        "c-x",
    )


def test_abandoned_in_queue() -> None:
    t, out, now = tracker()
    t.on_result(result("u2", Action.PRIORITY))
    t.on_join(msg(Event="QueueCallerJoin", Queue="droits", Uniqueid="u2"))
    now[0] += 45
    t.on_abandon(msg(Event="QueueCallerAbandon", Queue="droits", Uniqueid="u2"))
    t.on_hangup(msg(Event="Hangup", Uniqueid="u2"))
    assert (out[0].outcome, out[0].wait_s) == ("abandoned", 45.0)


def test_router_ended_calls_and_early_hangups() -> None:
    t, out, _now = tracker()
    for cid, action in (("d", Action.DEFLECT), ("h", Action.HANGUP), ("c", Action.CLOSED), ("cb", Action.CALLBACK)):
        t.on_result(result(cid, action, None))
        t.on_hangup(msg(Event="Hangup", Uniqueid=cid))
    t.on_result(result("gone", None, hung_up=True))  # the caller left during the menu: emitted at once
    assert [o.outcome for o in out] == [
        "deflected",
        "hung_up_by_router",
        "closed",
        "callback_accepted",
        "caller_hung_up",
    ]


def test_events_of_other_channels_are_ignored_and_stale_records_swept() -> None:
    t, out, now = tracker()
    t.on_join(msg(Event="QueueCallerJoin", Queue="droits", Uniqueid="agent-leg"))
    t.on_hangup(msg(Event="Hangup", Uniqueid="agent-leg"))
    assert out == []
    t.on_result(result("lost", Action.QUEUE))
    assert t.sweep() == 0
    now[0] += 3601
    assert t.sweep() == 1 and out[0].outcome == "ended"
