"""AMI wire format, without I/O.

After a banner line (``Asterisk Call Manager/<version>``), both directions exchange messages of
``Key: Value`` lines ending in CRLF, closed by an empty line. Keys may repeat (``Output:``,
``ChanVariable:``), so a message keeps every pair in order and offers the first value by key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..exceptions import AMIProtocolError

__all__ = ["Message", "MessageParser", "encode_action"]

MAX_MESSAGE_BYTES = 1 << 20  # a QueueStatus of a big centre is tens of kB; 1 MiB is an error


class Message(Mapping[str, str]):
    """One AMI message. ``msg["Event"]`` is the first value (keys compare case-insensitively)."""

    __slots__ = ("_first", "pairs")

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        first: dict[str, str] = {}
        for k, v in pairs:
            first.setdefault(k.lower(), v)
        self._first = first

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._first

    def getall(self, key: str) -> list[str]:
        k = key.lower()
        return [v for kk, v in self.pairs if kk.lower() == k]

    @property
    def event(self) -> str | None:
        return self._first.get("event")

    @property
    def response(self) -> str | None:
        return self._first.get("response")

    @property
    def action_id(self) -> str | None:
        return self._first.get("actionid")

    def __repr__(self) -> str:
        head = self.event or self.response or "?"
        return f"Message({head!r}, {len(self.pairs)} fields)"


class MessageParser:
    """Feed bytes, get messages. Tolerates LF-only line ends; refuses oversized messages."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = b""
        self.banner: str | None = None
        self.max_bytes = max_bytes

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        if self.banner is None:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > 1024:
                    raise AMIProtocolError("no AMI banner in the first 1024 bytes")
                return out
            self.banner = self._buf[:i].decode("utf-8", "replace").strip()
            self._buf = self._buf[i + 1 :]
            if not self.banner.startswith("Asterisk Call Manager"):
                raise AMIProtocolError(f"not an AMI server: banner {self.banner[:60]!r}")
        while True:
            block, sep = self._split()
            if sep is None:
                if len(self._buf) > self.max_bytes:
                    raise AMIProtocolError(f"AMI message larger than {self.max_bytes} bytes")
                return out
            if not block.strip():
                continue  # stray empty lines between messages
            out.append(self._parse(block))

    def _split(self) -> tuple[bytes, bytes | None]:
        i = self._buf.find(b"\r\n\r\n")
        j = self._buf.find(b"\n\n")
        if i < 0 and j < 0:
            return b"", None
        if i >= 0 and (j < 0 or i <= j):
            block, self._buf = self._buf[:i], self._buf[i + 4 :]
            return block, b"\r\n\r\n"
        block, self._buf = self._buf[:j], self._buf[j + 2 :]
        return block, b"\n\n"

    @staticmethod
    def _parse(block: bytes) -> Message:
        pairs: list[tuple[str, str]] = []
        for raw in block.decode("utf-8", "replace").split("\n"):
            line = raw.rstrip("\r")
            if not line:
                continue
            key, sep, value = line.partition(":")
            if not sep:
                # Command output of old versions ends with --END COMMAND--; keep it as output
                pairs.append(("Output", line))
                continue
            pairs.append((key.strip(), value[1:] if value.startswith(" ") else value))
        if not pairs:
            raise AMIProtocolError("empty AMI message")
        return Message(pairs)


def encode_action(name: str, fields: Mapping[str, str | int] | list[tuple[str, str]] | None = None) -> bytes:
    """``Action: name`` then the fields; a list allows repeated keys (``Variable``)."""
    lines = [f"Action: {name}"]
    items = fields.items() if isinstance(fields, Mapping) else (fields or [])
    for k, v in items:
        s = str(v)
        if "\r" in s or "\n" in s or "\r" in k or "\n" in k:
            raise ValueError(f"AMI field {k!r} contains a line break")
        lines.append(f"{k}: {s}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
