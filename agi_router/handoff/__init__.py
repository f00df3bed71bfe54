"""Handoff: the agent who answers knows why the caller called, and tells the router when it was wrong.

What a routed call carries to the agent (all built from the one :class:`AgentContext` of the call):

* ``context.py``: the call's context (motive, level, guesses, flags such as a third call or several
  requests, segment, queue, rule) and the channel variables that carry it: ``ROUTER_REF`` and the
  ``ROUTER_H_*`` values the dialplan's pre-dial handler turns into ``X-Router-*`` SIP headers on the
  member's INVITE (inheritable ``__`` variables, so they reach app_queue's member legs);
* ``whisper.py``: the one short sentence the agent hears before the bridge (Queue's announceoverride,
  played to the member only), off / on / only when useful;
* ``store.py``: contexts by reference (in process or Redis), expiring with the caller memory;
* ``api.py``: ``GET /calls/{ref}`` on the router's HTTP port, behind a bearer token (``api.token``);
* ``correction.py``: the agent's feature code (``*7`` + skill digit, features.conf applicationmap) over
  FastAGI: the router checks the digit against the catalogue, records the correction (audit trail,
  ``agi_router_agent_corrections_total``, the sampled utterances' label) and gives the caller's new leg
  the context again ("transféré depuis ...");
* ``events.py``: answered calls, corrections and callbacks, as the router counts and records them.
"""

from .api import CallsAPI
from .context import AgentContext, Handoff, HandoffConfig, context_ref
from .correction import CorrectionHandler, TransferHandler
from .events import AgentEvents
from .store import ContextStore, InMemoryContextStore, RedisContextStore
from .whisper import WHISPER_MODES, whisper_prompts, whisper_texts

__all__ = [
    "WHISPER_MODES",
    "AgentContext",
    "AgentEvents",
    "CallsAPI",
    "ContextStore",
    "CorrectionHandler",
    "Handoff",
    "HandoffConfig",
    "InMemoryContextStore",
    "RedisContextStore",
    "TransferHandler",
    "context_ref",
    "whisper_prompts",
    "whisper_texts",
]
