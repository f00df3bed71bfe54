"""FastAGI: res_agi's wire format (protocol), one call (session), the listener (server)."""

from .protocol import AGIEnvironment, AGIResponse, format_command, parse_env_line, parse_response_line
from .server import AGIHandler, AGIServer, AGIServerConfig, FallbackRoute
from .session import AGISession, GetDataResult, StreamFileResult, read_environment

__all__ = [
    "AGIEnvironment",
    "AGIHandler",
    "AGIResponse",
    "AGIServer",
    "AGIServerConfig",
    "AGISession",
    "FallbackRoute",
    "GetDataResult",
    "StreamFileResult",
    "format_command",
    "parse_env_line",
    "parse_response_line",
    "read_environment",
]
