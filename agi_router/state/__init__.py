"""Caller memory backends: in-process (embedded default) and Redis (several routers)."""

from .base import CallerMemory
from .memory import InMemoryCallerMemory
from .redis import RedisCallerMemory

__all__ = ["CallerMemory", "InMemoryCallerMemory", "RedisCallerMemory"]
