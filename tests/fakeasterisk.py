"""A protocol-faithful fake of Asterisk's res_agi, as seen from a FastAGI server.

It speaks the exact wire format of Asterisk 22 (res_agi.c ``launch_netscript``,
``setup_env``, ``parse_args``, ``agi_handle_command``), checked against traces recorded
from a real Asterisk 22 in ``tests/fixtures/agi/``:

* ``agi_network: yes`` and ``agi_network_script: <path>`` first, then the ``setup_env``
  block in its order, ``agi_arg_N`` lines, and a blank line;
* one response line per command, ``510``/``520`` for unknown commands and bad syntax;
* on caller hang-up, one inline ``HANGUP`` line, then ``511`` for every later command;
* commands are read one at a time (``fgets`` + ``poll`` in ``run_agi``): a client that
  pipelines is flagged (``pipelined``), since the real thing would stall.

A :class:`FakeChannel` scripts the caller: the DTMF they type at each GET DATA, the moment
they hang up, channel variables. Every command the router sent is kept in ``commands``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

DEAD = "511 Command Not Permitted on a dead channel or intercept routine"
USAGE_520 = [
    "520-Invalid command syntax.  Proper usage follows:",
    " Usage: SET VARIABLE <variablename> <value>",
    "520 End of proper usage.",
]


def parse_args(line: str) -> list[str]:
    """res_agi's ``parse_args``: whitespace-separated, ``"`` toggles quoting, ``\\`` escapes."""
    out: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    started = False
    for ch in line:
        if escaped:
            cur.append(ch)
            escaped = False
            started = True
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                out.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        out.append("".join(cur))
    return out


def environment(
    *,
    script: str = "3646",
    callerid: str = "0612345678",
    calleridname: str = "unknown",
    uniqueid: str = "1763900000.1",
    channel: str = "PJSIP/softphone-00000001",
    args: Sequence[str] = (),
    host: str = "127.0.0.1:4573",
    language: str = "fr",
) -> list[str]:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://{host}/{script}",
        f"agi_channel: {channel}",
        f"agi_language: {language}",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.10.1",
        f"agi_callerid: {callerid}",
        f"agi_calleridname: {calleridname}",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 3646",
        "agi_rdnis: unknown",
        "agi_context: hotline",
        "agi_extension: 3646",
        "agi_priority: 5",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140245771835072",
    ]
    lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(args, 1)]
    return lines


@dataclass
class FakeChannel:
    callerid: str = "0612345678"
    uniqueid: str = "1763900000.1"
    args: Sequence[str] = ()
    dtmf: list[str] = field(default_factory=list)  # one entry per GET DATA / WAIT FOR DIGIT: digits or ""
    hangup_after: int | None = None  # hang up after answering this many commands
    hangup_during: str | None = None  # hang up while executing the first command starting with this
    variables: dict[str, str] = field(default_factory=dict)
    command_delay: float = 0.0  # seconds Asterisk takes per command (slow PBX)
    # EXEC Dial UnicastRTP/...: a live-audio leg (tests/fakepbx.py); returns the response lines
    dial_handler: Callable[[list[str]], Awaitable[list[str]]] | None = None
    script: str = "3646"
    commands: list[str] = field(default_factory=list)
    hung_up: bool = False
    closed_by_router: bool = False
    # Real time: STREAM FILE / GET DATA take as long as the prompt plays (this function of the prompt id,
    # e.g. the router's PromptLengths), GET DATA then waits its timeout or the caller types after
    # ``digit_delay`` s. None: instant answers.
    play_seconds: Callable[[str], float] | None = None
    digit_delay: float = 1.0
    routed_at: float | None = None  # loop time at which ROUTER_DONE=1 was set (the caller is on their way)
    # res_agi reads commands with fgets() on a stdio stream, then polls the socket: a second command
    # sent before the first one's response sits in the stdio buffer unseen. Real Asterisk stalls;
    # the fake records it so tests can fail on it.
    pipelined: bool = False

    def duration(self, argv: list[str], typed: str) -> float:
        """How long Asterisk takes to answer this command, for a channel in real time."""
        cmd = " ".join(argv[:2]).upper()
        if self.play_seconds is None or cmd not in ("STREAM FILE", "GET DATA") or len(argv) < 3:
            return 0.0
        played = self.play_seconds(argv[2])
        if cmd == "GET DATA":
            return played + (self.digit_delay if typed else int(argv[3]) / 1000 if len(argv) > 3 else 5.0)
        return played

    def answer(self, argv: list[str]) -> list[str]:
        cmd = " ".join(argv[:2]).upper()
        name = argv[0].upper() if argv else ""
        if name == "ANSWER":
            return ["200 result=0"]
        if cmd == "STREAM FILE":
            if len(argv) < 4 and len(argv) != 3:
                return ["520 Invalid command syntax.  Proper usage not available."]
            return ["200 result=0 endpos=8000"]
        if cmd == "GET DATA":
            if len(argv) < 3:
                return ["520 Invalid command syntax.  Proper usage not available."]
            max_digits = int(argv[4]) if len(argv) > 4 else 1024
            typed = self.dtmf.pop(0) if self.dtmf else ""
            if len(typed) >= max_digits:
                return [f"200 result={typed[:max_digits]}"]
            return [f"200 result={typed} (timeout)"]
        if cmd == "WAIT FOR":
            typed = self.dtmf.pop(0) if self.dtmf else ""
            return [f"200 result={ord(typed[0]) if typed else 0}"]
        if cmd == "GET VARIABLE":
            if argv[2] in self.variables:
                return [f"200 result=1 ({self.variables[argv[2]]})"]
            return ["200 result=0"]
        if cmd == "SET VARIABLE":
            if len(argv) != 4:
                return USAGE_520
            self.variables[argv[2]] = argv[3]
            if argv[2] == "ROUTER_DONE" and argv[3] == "1":
                self.routed_at = asyncio.get_running_loop().time()
            return ["200 result=1"]
        if name == "EXEC":
            return ["200 result=0"]
        if name == "HANGUP":
            self.hung_up = True
            return ["200 result=1"]
        if name == "VERBOSE":
            return ["200 result=1"]
        return ["510 Invalid or unknown command"]


async def run_call(host: str, port: int, channel: FakeChannel, *, timeout: float = 10.0) -> FakeChannel:
    """Play one AGI session against the server, the way res_agi would."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(timeout):
            env = environment(
                script=channel.script, callerid=channel.callerid, uniqueid=channel.uniqueid, args=channel.args
            )
            writer.write(("\n".join(env) + "\n\n").encode())
            await writer.drain()
            answered = 0
            while True:
                raw = await reader.readline()
                if not raw:
                    channel.closed_by_router = True
                    break
                line = raw.decode().rstrip("\n")
                if reader._buffer:  # bytes of a next command already arrived: pipelining
                    channel.pipelined = True
                channel.commands.append(line)
                argv = parse_args(line)
                if channel.command_delay:
                    await asyncio.sleep(channel.command_delay)
                if channel.hung_up:
                    writer.write((DEAD + "\n").encode())
                    await writer.drain()
                    continue
                if channel.hangup_during and line.upper().startswith(channel.hangup_during):
                    channel.hung_up = True
                    writer.write(b"HANGUP\n200 result=-1\n")
                    await writer.drain()
                    continue
                if (
                    channel.dial_handler is not None
                    and argv[:2] == ["EXEC", "Dial"]
                    and len(argv) > 2
                    and (argv[2].startswith("UnicastRTP/"))
                ):
                    outs = await channel.dial_handler(argv)
                    if "HANGUP" in outs:
                        channel.hung_up = True
                else:
                    if channel.play_seconds is not None:
                        typed = channel.dtmf[0] if channel.dtmf and line.upper().startswith("GET DATA") else ""
                        await asyncio.sleep(channel.duration(argv, typed))
                    outs = channel.answer(argv)
                for out in outs:
                    writer.write((out + "\n").encode())
                await writer.drain()
                answered += 1
                if channel.hangup_after is not None and answered >= channel.hangup_after and not channel.hung_up:
                    channel.hung_up = True
                    writer.write(b"HANGUP\n")
                    await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    return channel
