"""Callbacks (virtual hold): a durable store of accepted callbacks and the placer that makes them."""

from .placer import CallbackPlacer, PlacerConfig
from .store import Callback, CallbackStore

__all__ = ["Callback", "CallbackPlacer", "CallbackStore", "PlacerConfig"]
