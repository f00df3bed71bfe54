"""AMI edge: the wire format (protocol) and a reconnecting asyncio client (client)."""

from .client import ActionResult, AMIClient, AMIConfig, AMIState
from .protocol import Message, MessageParser, encode_action

__all__ = ["AMIClient", "AMIConfig", "AMIState", "ActionResult", "Message", "MessageParser", "encode_action"]
