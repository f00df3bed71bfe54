"""Callbacks (virtual hold): a durable store of accepted callbacks (SQLite for one router, Redis shared by
several) and the placer that makes them."""

from .placer import CallbackPlacer, PlacerConfig
from .redis_store import RedisCallbackStore
from .store import Callback, CallbackRecords, CallbackStore

__all__ = ["Callback", "CallbackPlacer", "CallbackRecords", "CallbackStore", "PlacerConfig", "RedisCallbackStore"]
