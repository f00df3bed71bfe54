"""The per-call orchestration: motive capture sources and the 3646 call flow."""

from .capture import CallContext, ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture, MotiveCapture
from .flow import CallFlow, CallFlowConfig, CallResult, PolicyHolder

__all__ = [
    "CallContext",
    "CallFlow",
    "CallFlowConfig",
    "CallResult",
    "ChainedCapture",
    "DTMFMenuCapture",
    "DTMFMenuConfig",
    "HintCapture",
    "MotiveCapture",
    "PolicyHolder",
]
