"""The routing decision: ``decide(policy, facts) -> Decision``. Pure: no I/O, no clock, no state.

Rules, first match wins (each has a stable id, written to the audit trail):

===================  =========================================================================
``hours.closed``     outside opening hours or on a holiday                      -> closed
``motive.human``     the caller asked for a person                              -> queue (human)
``motive.multi``     several requests                                           -> queue (human), or the
                     queue of the most urgent request heard (``[multi] route``)
``motive.none``      no motive captured (no input, no match)                    -> queue (human)
                     (``safeguard.failed_capture`` when the safeguard stopped the dialogue)
``repeat.priority``  N consecutive calls ended by the router, each within the
                     chain gap of the previous one                              -> priority agent
``repeat.hangup``    same motive again within the window after a router-ended
                     call                                                       -> immediate hang-up
``deflect.simple``   active online account + deflectable motive                 -> deflect
``queue.unstaffed``  no agent logged in to the skill queue (fresh AMI data)     -> default queue, no offer
``queue.saturated``  the skill queue is saturated (fresh AMI data only)         -> dissuade
``queue.skill``      everything else                                            -> skill queue
===================  =========================================================================
"""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import date, datetime, timedelta

from .config import Policy
from .model import AccountFacts, Action, CallFacts, Decision, PastCall, QueueSnapshot, Segment

__all__ = ["account_is_active", "consecutive_router_endings", "decide", "is_open", "segment_of"]


def _months_before(d: date, months: int) -> date:
    y, m = divmod(d.year * 12 + (d.month - 1) - months, 12)
    m += 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def account_is_active(policy: Policy, account: AccountFacts, today: date) -> bool:
    """Used in the last ``active_months`` calendar months (today included)."""
    if not (account.known and account.exists and account.last_login):
        return False
    return account.last_login >= _months_before(today, policy.active_months)


def segment_of(policy: Policy, facts: CallFacts, today: date) -> Segment:
    if facts.withheld:
        return Segment.WITHHELD
    a = facts.account
    if not a.known:
        return Segment.UNKNOWN
    if not a.exists or a.last_login is None:
        return Segment.NO_ACCOUNT
    return Segment.ACTIVE if account_is_active(policy, a, today) else Segment.INACTIVE


def is_open(policy: Policy, now: datetime) -> bool:
    hours = policy.hours
    if not hours.enabled:
        return True
    local = now.astimezone(hours.timezone)
    if local.date() in hours.holidays:
        return False
    t = local.time().replace(tzinfo=None)
    return any(start <= t < end for start, end in hours.weekly[local.weekday()])


def consecutive_router_endings(policy: Policy, history: tuple[PastCall, ...], now: datetime) -> int:
    """How many calls in a row, newest first, the router ended itself (deflect or hang-up), each
    within ``chain_gap`` of the next one and the newest within ``chain_gap`` of now."""
    count = 0
    later = now
    for call in reversed(history):
        if not call.action.hangs_up or later - call.at > policy.chain_gap or call.at > later:
            break
        count += 1
        later = call.at
    return count


def _unstaffed(snap: QueueSnapshot | None) -> bool:
    """Nobody logged in: that is not saturation (nobody waits long in a queue nobody serves, and no
    callback could be taken), it is a queue to avoid."""
    return snap is not None and snap.fresh and snap.logged_in_agents == 0


def _saturated(policy: Policy, snap: QueueSnapshot | None) -> bool:
    if snap is None or not snap.fresh or snap.logged_in_agents == 0:
        return False
    if snap.waiting >= policy.saturation_max_waiting:
        return True
    return snap.available_agents == 0 and snap.estimated_wait_s >= policy.saturation_max_wait_s


UNKNOWN_MOTIVE = "unknown"


def decide(policy: Policy, facts: CallFacts) -> Decision:
    """The 2024 rules, then the policy's safeguards (which only ever turn a router-ended call into a queue)."""
    decision = _decide(policy, facts)
    if decision.action.hangs_up and policy.safeguards.enabled:
        return _safeguard(policy, facts, decision)
    return decision


def _safeguard(policy: Policy, facts: CallFacts, d: Decision) -> Decision:
    """The first safeguard that applies to a router-ended call sends the caller to the skill queue instead."""
    g = policy.safeguards
    name = ""
    if g.exempt_callers and facts.caller in g.exempt_callers:
        name = "exempt_caller"
    elif g.exempt_flags and facts.account.flags & g.exempt_flags:
        name = "exempt_flag"
    elif g.daily_cap and facts.ended_today >= g.daily_cap:
        name = "daily_cap"
    elif g.dtmf_fallback and d.action is Action.DEFLECT and facts.motive.method == "dtmf":
        name = "dtmf_fallback"
    elif g.other_language and d.action is Action.DEFLECT and _other_language(policy, facts.motive.language):
        name = "other_language"
    elif g.require_alternative and not (d.action is Action.DEFLECT and d.sms_template):
        name = "no_alternative"
    if not name:
        return d
    rule = f"safeguard.{name}"
    return replace(
        d,
        action=Action.QUEUE,
        rule=rule,
        queue=policy.queue_for(d.motive_id),
        priority=policy.default_priority,
        prompts=(),
        sms_template=None,
        reasons=(*d.reasons, rule),
    )


def _other_language(policy: Policy, language: str) -> bool:
    """Heard speaking a language other than the line's (the deflection message would not be understood)."""
    return bool(language) and language != policy.language


def _decide(policy: Policy, facts: CallFacts) -> Decision:
    local_now = facts.now.astimezone(policy.timezone)
    today = local_now.date()
    segment = segment_of(policy, facts, today)
    motive = facts.motive
    mid = motive.motive_id
    entry = policy.catalogue.get(mid) if mid else None
    # an id the catalogue does not know (free text from the dialplan...) goes no further than this: the
    # decision, ROUTER_MOTIVE and the metric labels say "unknown", a closed value
    known_mid = mid if entry is not None else (UNKNOWN_MOTIVE if mid else None)
    queue = policy.queue_for(mid)
    reasons: list[str] = [f"segment.{segment.value}"]

    def make(action: Action, rule: str, **kw: object) -> Decision:
        defaults: dict[str, object] = {
            "queue": queue,
            "priority": policy.default_priority,
            "prompts": (),
            "sms_template": None,
            "callback_offer": False,
        }
        defaults.update(kw)
        return Decision(
            action=action,
            rule=rule,
            reasons=(*reasons, rule),
            policy_version=policy.label,
            segment=segment,
            motive_id=known_mid,
            **defaults,  # type: ignore[arg-type]
        )

    if not is_open(policy, facts.now):
        return make(Action.CLOSED, "hours.closed", queue=None, prompts=policy.hours.closed_prompts)

    human = {"queue": policy.human_queue, "priority": policy.human_priority}
    if motive.human_requested or (entry is not None and entry.kind == "human"):
        return make(Action.QUEUE, "motive.human", **human)
    if entry is not None and entry.kind == "multi":
        first = policy.most_urgent(motive.parts) if policy.multi_route == "most_urgent" else None
        if first is not None:
            reasons.append(f"multi.parts_{min(len(motive.parts), 3)}")
            return make(Action.QUEUE, "motive.multi", queue=policy.queue_for(first))
        return make(Action.QUEUE, "motive.multi", **human)
    if entry is None:
        if mid:
            reasons.append("motive.unknown_id")
        cap = policy.safeguards.person_after_failed_captures
        if cap and not mid and motive.failed_captures >= cap:
            return make(Action.QUEUE, "safeguard.failed_capture", **human)
        return make(Action.QUEUE, "motive.none", **human)

    if not facts.withheld:
        chain = consecutive_router_endings(policy, facts.history, facts.now)
        if chain:
            reasons.append(f"repeat.chain_{chain}")
        if policy.priority_enabled and chain >= policy.priority_after_hangups:
            return make(Action.PRIORITY, "repeat.priority", priority=policy.priority_value)
        last = facts.history[-1] if facts.history else None
        if (
            policy.hangup_enabled
            and last is not None
            and last.action.hangs_up
            and last.motive == mid
            and timedelta(0) <= facts.now - last.at <= policy.repeat_window
        ):
            return make(Action.HANGUP, "repeat.hangup", queue=None, prompts=policy.hangup_prompts)

    if policy.deflection_enabled and mid in policy.deflect_motives:
        if segment is not Segment.ACTIVE:
            reasons.append("deflect.skipped_account")
        elif motive.confidence < policy.deflect_min_confidence:
            reasons.append("deflect.skipped_confidence")
        else:
            # never announce an SMS that cannot be sent (landline, withheld number, no gateway)
            sms = entry.sms if policy.deflect_sms and facts.sms_capable else None
            prompts = (
                *policy.deflect_prompts_before,
                f"router/online/{mid}",
                *((policy.deflect_sms_prompt,) if sms and policy.deflect_sms_prompt else ()),
                *policy.deflect_prompts_after,
            )
            return make(Action.DEFLECT, "deflect.simple", queue=None, prompts=prompts, sms_template=sms)

    if policy.unstaffed_reroute and queue != policy.default_queue and _unstaffed(facts.queues.get(queue)):
        if _unstaffed(facts.queues.get(policy.default_queue)):
            reasons.append("queue.default_unstaffed")  # the dialplan will say so (JOINUNAVAIL)
        return make(Action.QUEUE, "queue.unstaffed", queue=policy.default_queue)
    if policy.saturation_enabled and _saturated(policy, facts.queues.get(queue)):
        return make(
            Action.DISSUADE,
            "queue.saturated",
            prompts=policy.saturation_prompts,
            callback_offer=policy.saturation_callback,
        )
    return make(Action.QUEUE, "queue.skill")
