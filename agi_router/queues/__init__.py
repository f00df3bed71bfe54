"""Live queue state from AMI (the policy's saturation input)."""

from .model import Member, QueueModel, QueueState

__all__ = ["Member", "QueueModel", "QueueState"]
