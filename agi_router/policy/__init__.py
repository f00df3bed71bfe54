"""The routing policy: pure decision core (model, engine) and its validated configuration."""

from .config import Policy, default_policy_path, load_policy, parse_policy
from .engine import account_is_active, consecutive_router_endings, decide, is_open, segment_of
from .model import AccountFacts, Action, CallFacts, Decision, MotiveFacts, PastCall, QueueSnapshot, Segment

__all__ = [
    "AccountFacts",
    "Action",
    "CallFacts",
    "Decision",
    "MotiveFacts",
    "PastCall",
    "Policy",
    "QueueSnapshot",
    "Segment",
    "account_is_active",
    "consecutive_router_endings",
    "decide",
    "default_policy_path",
    "is_open",
    "load_policy",
    "parse_policy",
    "segment_of",
]
