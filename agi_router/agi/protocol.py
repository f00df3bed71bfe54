"""res_agi's wire format, without I/O.

What Asterisk sends on a FastAGI connection (res_agi.c, ``setup_env`` and ``agi_handle_command``):

* an environment block of ``agi_<key>: <value>\\n`` lines closed by an empty line;
* for each command line the script writes, one response:
  ``200 result=<n> [(<data>)] [endpos=<n>]``, ``510 Invalid or unknown command``,
  ``511 Command Not Permitted on a dead channel or intercept routine``, or a multi-line
  ``520-Invalid command syntax.  Proper usage follows:`` ... ``520 End of proper usage.``;
* when the caller hangs up, a bare ``HANGUP`` line, inline, at any moment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..exceptions import AGIProtocolError

__all__ = [
    "HANGUP_LINE",
    "AGIEnvironment",
    "AGIResponse",
    "format_command",
    "parse_env_block",
    "parse_env_line",
    "parse_response_line",
    "quote_arg",
]

HANGUP_LINE = "HANGUP"

_KEY = re.compile(r"agi_[a-z0-9_]+\Z")
_RESPONSE_200 = re.compile(r"^200 result=(?P<result>-?\d*)(?: \((?P<data>.*)\))?(?: endpos=(?P<endpos>-?\d+))?\s*$")


_ENV_BLOCK = re.compile(r"^(agi_[a-z0-9_]+): ?([^\n]*)$", re.M)


def parse_env_block(text: str) -> dict[str, str]:
    """All well-formed ``agi_key: value`` lines of a block, in one pass (the caller compares the
    count with the number of lines to detect a malformed one)."""
    return dict(_ENV_BLOCK.findall(text))


def parse_env_line(line: str) -> tuple[str, str]:
    """Parse one ``agi_key: value`` line (without its newline)."""
    key, sep, value = line.partition(":")
    if not sep or not key.startswith("agi_") or not _KEY.match(key):
        shown = line if len(line) <= 80 else line[:77] + "..."
        raise AGIProtocolError(f"malformed AGI environment line {shown!r}: expected 'agi_<key>: <value>'")
    return key, value[1:] if value.startswith(" ") else value


@dataclass(frozen=True, slots=True)
class AGIEnvironment:
    """The ``agi_*`` block Asterisk sends first. Unknown keys are kept in ``raw``."""

    raw: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.raw.get(key if key.startswith("agi_") else "agi_" + key, default)

    @property
    def network_script(self) -> str:
        """The path of the ``agi://host:port/<script>`` URL, without query string."""
        return self.get("network_script").split("?", 1)[0].strip("/")

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("callerid")

    @property
    def language(self) -> str:
        return self.get("language", "fr")

    @property
    def args(self) -> tuple[str, ...]:
        out: list[str] = []
        i = 1
        while f"agi_arg_{i}" in self.raw:
            out.append(self.raw[f"agi_arg_{i}"])
            i += 1
        return tuple(out)


@dataclass(frozen=True, slots=True)
class AGIResponse:
    """A ``200`` response. ``result`` is kept as text: GET DATA answers ``result= (timeout)``."""

    code: int
    result: str
    data: str | None = None
    endpos: int | None = None

    @property
    def result_int(self) -> int:
        try:
            return int(self.result)
        except ValueError:
            raise AGIProtocolError(f"AGI result {self.result!r} is not an integer") from None


_OK = {f"200 result={n}": AGIResponse(200, str(n)) for n in (-1, 0, 1)}


def parse_response_line(line: str) -> AGIResponse:
    """Parse a ``200 result=...`` line. Error codes are handled by the session."""
    fast = _OK.get(line)
    if fast is not None:
        return fast
    m = _RESPONSE_200.match(line)
    if m is None:
        shown = line if len(line) <= 120 else line[:117] + "..."
        raise AGIProtocolError(f"malformed AGI response {shown!r}")
    endpos = m.group("endpos")
    return AGIResponse(200, m.group("result"), m.group("data"), int(endpos) if endpos is not None else None)


def quote_arg(arg: str | int) -> str:
    """Quote one command argument the way res_agi's ``parse_args`` reads it back."""
    s = str(arg)
    if "\n" in s or "\r" in s:
        raise ValueError("AGI arguments cannot contain line breaks")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(name: str, *args: str | int) -> bytes:
    """Encode a command line: ``SET VARIABLE "ROUTER_ACTION" "queue"\\n``."""
    parts = [name, *(quote_arg(a) for a in args)]
    return (" ".join(parts) + "\n").encode("utf-8")
