"""An AMI conversation recorded from a real Asterisk 22.10.1 (tests/fixtures/ami/*.trace), replayed to the
AMI client: a server that answers each action with the bytes Asterisk really sent (ActionID rewritten)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from agi_router.ami.client import AMIClient, AMIConfig
from agi_router.ami.protocol import MessageParser

TRACE = Path(__file__).parent / "fixtures" / "ami" / "login-queuestatus.trace"


def recorded() -> tuple[bytes, dict[str, bytes]]:
    """The banner and, per action name (successful session only), what Asterisk answered."""
    text = TRACE.read_text()
    session = text.split("=== new connection\n", 1)[1]
    chunks = re.split(r"^(<<< |>>> )", session, flags=re.M)
    banner = b""
    answers: dict[str, bytes] = {}
    last_action = ""
    for tag, body in zip(chunks[1::2], chunks[2::2], strict=True):
        if tag == ">>> ":
            last_action = re.search(r"^Action: (\S+)", body, flags=re.M).group(1)  # type: ignore[union-attr]
        elif not banner:
            banner = body.split("\n", 1)[0].encode() + b"\r\n"
            rest = body.split("\n", 1)[1] if "\n" in body else ""
            if rest.strip():
                answers["(after banner)"] = rest.encode()
        else:
            answers[last_action] = body.encode()
    return banner, answers


def test_recorded_messages_parse() -> None:
    banner, answers = recorded()
    p = MessageParser()
    p.feed(banner.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r"))
    assert p.banner == "Asterisk Call Manager/11.0.0"
    msgs = p.feed(answers["QueueStatus"].replace(b"\n", b"\r\n"))
    assert [m.event or m.response for m in msgs] == [
        "Success",
        "QueueParams",
        "QueueMember",
        "QueueMember",
        "QueueStatusComplete",
    ]
    assert msgs[2]["Location"] == "PJSIP/agent2" and msgs[2]["Status"] == "5"


async def test_client_against_the_recorded_asterisk() -> None:
    banner, answers = recorded()
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        buf = b""
        while data := await reader.read(65536):
            buf += data
            while b"\r\n\r\n" in buf:
                block, buf = buf.split(b"\r\n\r\n", 1)
                fields = dict(line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line)
                seen.append(fields["Action"])
                answer = answers[fields["Action"]].decode()
                answer = re.sub(r"^ActionID: .*$", f"ActionID: {fields['ActionID']}", answer, flags=re.M)
                writer.write(answer.replace("\n", "\r\n").encode())
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    client = AMIClient(AMIConfig(port=server.sockets[0].getsockname()[1], secret="x", ping_interval=60))
    booted: list[str] = []
    client.on("FullyBooted", lambda m: booted.append(m["Status"]))
    try:
        await client.start()
        assert await client.wait_connected(2)
        assert (await client.action("Ping")).response["Ping"] == "Pong"
        status = await client.action("QueueStatus", {"Queue": "droits"})
        assert [e.event for e in status.events] == ["QueueParams", "QueueMember", "QueueMember"]
        summary = await client.action("QueueSummary", {"Queue": "droits"})
        assert summary.events[0]["LoggedIn"] == "0" and summary.events[0]["LongestHoldTime"] == "0"
        assert booted == ["Fully Booted"]
        assert seen == ["Login", "Ping", "QueueStatus", "QueueSummary"]
    finally:
        await client.close()
        server.close()
