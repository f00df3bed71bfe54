"""The whisper: one short sentence the agent hears when they answer, before the caller is connected.

app_queue plays Queue()'s *announceoverride* (``&``-separated files) to the member channel only, with the
caller on hold (autoservice): the caller hears none of it, and a key pressed by the agent skips the rest.
The dialplan passes ``${ROUTER_WHISPER}`` there. The sentence is made of prompts spoken by
``agi-router asterisk setup`` (like every other prompt; a recording can replace any of them):

    router/whisper/<motive id, '.' as '-'>      the motive's short label ("suivi de remboursement")
    router/whisper/flag-<flag>                  "prioritaire", "plusieurs demandes", "motif non compris", ...
    router/whisper/repeat-2|3|many              "deuxième appel", "troisième appel", "appels répétés"
    router/whisper/from-<queue>                 "transféré depuis arrêt de travail"

Modes: ``off``; ``on`` (every call); ``useful`` (the default): only when it tells the agent more than the
queue they answer for, i.e. a precise motive or a flag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..motives.catalogue import Catalogue
    from .context import AgentContext

__all__ = ["WHISPER_MODES", "whisper_prompts", "whisper_texts"]

WHISPER_MODES = ("off", "on", "useful")
PREFIX = "router/whisper/"

FLAG_TEXTS = {
    "priority": "Prioritaire.",
    "several": "Plusieurs demandes.",
    "not_understood": "Motif non compris.",
    "other_language": "Autre langue probable.",
    "callback": "Rappel.",
}
REPEAT_TEXTS = {"repeat-2": "Deuxième appel.", "repeat-3": "Troisième appel.", "repeat-many": "Appels répétés."}


def _motive_prompt(motive_id: str) -> str:
    return PREFIX + motive_id.replace(".", "-")


def whisper_prompts(ctx: AgentContext, mode: str, catalogue: Catalogue) -> tuple[str, ...]:
    """The prompt ids of the call's whisper, in the order said; () when there is none."""
    if mode == "off":
        return ()
    motive = catalogue.get(ctx.motive or "")
    said = motive is not None and motive.kind == "normal"
    news: list[str] = []  # what the agent cannot guess from the queue they answer for
    if ctx.transferred_from:
        news.append(f"{PREFIX}from-{ctx.transferred_from}")
    if ctx.calls_today >= 2:
        n = ctx.calls_today
        news.append(PREFIX + ("repeat-2" if n == 2 else "repeat-3" if n == 3 else "repeat-many"))
    news += [f"{PREFIX}flag-{f}" for f in ctx.flags if f in FLAG_TEXTS]
    precise = said and motive is not None and not motive.id.endswith(".autre")
    if mode == "useful" and not precise and not news:
        return ()
    head = [_motive_prompt(motive.id)] if said and motive is not None else []
    return tuple(news[:1] + head + news[1:]) if ctx.transferred_from else tuple(head + news)


def whisper_texts(catalogue: Catalogue) -> dict[str, str]:
    """Every whisper prompt id -> its French text (``prompts.prompt_texts`` speaks them)."""
    out = {f"{PREFIX}flag-{k}": v for k, v in FLAG_TEXTS.items()}
    out.update({PREFIX + k: v for k, v in REPEAT_TEXTS.items()})
    for m in catalogue:
        if m.kind == "normal":
            out[_motive_prompt(m.id)] = m.short[0].upper() + m.short[1:] + "."
    for s in catalogue.skills.values():
        out[f"{PREFIX}from-{s.queue}"] = f"Transféré depuis {s.menu}."
    return out
