"""What-if replay of a policy before it goes live: the real ``decide()`` and the real caller memory over a
call log (the audit trail, a CSV, or a synthetic day), with a simple queue model (``agi-router replay``)."""

from .calls import ReplayCall, read_audit, read_csv
from .engine import Outcome, QueueModelConfig, replay
from .synth import synthetic_day

__all__ = ["Outcome", "QueueModelConfig", "ReplayCall", "read_audit", "read_csv", "replay", "synthetic_day"]
