"""Cohorts: the cross-cutting groups of callers whose exclusion is measured, live and in the replay.

Computed from the call's facts alone, without personal data, and a closed set (safe as a metric label).
A call counts in its account segment (:class:`~agi_router.policy.model.Segment`) and in every cohort here
that it belongs to; the live metric ``agi_router_cohort_decisions_total{cohort,action}`` and the replay
report both use :func:`cohorts_of`, so the live comparison reads like the replay.

==================  ==========================================================================
``flagged_fragile`` the directory flags one of :data:`FRAGILE_FLAGS` (aid, long illness, ...)
``dtmf_fallback``   the motive came from the DTMF menu (speech failed, refused or unavailable)
``capture_failed``  at least one sentence not understood or menu not answered before the result
``other_language``  heard speaking another language than the line's
``repeat_caller``   called about the same motive before, within the caller memory
==================  ==========================================================================
"""

from __future__ import annotations

from .model import CallFacts

__all__ = ["COHORTS", "FRAGILE_FLAGS", "cohorts_of"]

#: directory flags of the callers the 2024 rules were criticised for shutting out
FRAGILE_FLAGS = frozenset({"css", "ald", "handicap", "accompagnement", "no_internet", "fragile"})
COHORTS = ("flagged_fragile", "dtmf_fallback", "capture_failed", "other_language", "repeat_caller")


def cohorts_of(facts: CallFacts, line_language: str = "fr") -> tuple[str, ...]:
    m = facts.motive
    out = []
    if facts.account.flags & FRAGILE_FLAGS:
        out.append("flagged_fragile")
    if m.method == "dtmf":
        out.append("dtmf_fallback")
    if m.failed_captures:
        out.append("capture_failed")
    if m.language and m.language != line_language:
        out.append("other_language")
    if facts.history:
        out.append("repeat_caller")
    return tuple(out)
