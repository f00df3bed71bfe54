"""Observability: Prometheus metrics (``instruments``), timing wrappers for the dependencies
(``timed``) and the ``/metrics`` + ``/healthz`` HTTP endpoint (``http``)."""

from .http import MetricsServer
from .instruments import LATENCY_BUCKETS, RouterMetrics, Sources
from .timed import TimedDirectory, TimedMemory, TimedSms

__all__ = ["LATENCY_BUCKETS", "MetricsServer", "RouterMetrics", "Sources", "TimedDirectory", "TimedMemory", "TimedSms"]
