"""One FastAGI call: typed commands over an asyncio stream pair.

Every command has a response deadline. A command abandoned by a timeout or a cancellation
still gets its response from Asterisk later; the session remembers how many such responses
are owed and discards them before reading the next one, so the conversation never shifts
by one line (the classic bug of AGI libraries after a timeout).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from ..exceptions import (
    AGICommandError,
    AGIConnectionClosed,
    AGIDeadChannel,
    AGIHangup,
    AGIHeaderTooLarge,
    AGIInvalidCommand,
    AGIProtocolError,
    AGITimeout,
    AGIUsageError,
)
from .deadline import Deadline
from .protocol import (
    HANGUP_LINE,
    AGIEnvironment,
    AGIResponse,
    format_command,
    parse_env_block,
    parse_env_line,
    parse_response_line,
)

__all__ = ["AGISession", "GetDataResult", "StreamFileResult", "read_environment"]

log = logging.getLogger(__name__)

_MAX_USAGE_LINES = 200


async def _readline(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise AGIProtocolError(f"AGI line longer than the stream limit: {exc}") from None
    except ConnectionError as exc:
        raise AGIConnectionClosed(f"connection lost: {exc}") from None
    if not raw.endswith(b"\n"):
        raise AGIConnectionClosed("connection closed mid-line" if raw else "connection closed")
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


async def read_environment(
    reader: asyncio.StreamReader,
    *,
    timeout: float,
    max_bytes: int,
    max_lines: int,
    deadline: Deadline | None = None,
) -> AGIEnvironment:
    """Read the ``agi_*`` block up to its blank line, within ``timeout`` seconds overall.

    One ``readuntil`` for the whole block (Asterisk writes it in one go), bounded by
    ``max_bytes``. A client that sends half a header and closes gets :class:`AGIConnectionClosed`
    at once; one that stalls gets :class:`AGITimeout`; neither blocks the event loop. ``deadline``:
    the session's timer (:class:`~agi_router.agi.deadline.Deadline`), reused by its commands.
    """
    try:
        block = await (deadline or Deadline()).wait(reader.readuntil(b"\n\n"), timeout)
    except TimeoutError:
        raise AGITimeout(f"AGI environment not complete after {timeout:.3g} s") from None
    except asyncio.IncompleteReadError as exc:
        raise AGIConnectionClosed(
            "connection closed mid-header" if exc.partial else "connection closed before the header"
        ) from None
    except asyncio.LimitOverrunError:
        err = AGIHeaderTooLarge(f"AGI environment larger than the stream limit ({max_bytes} bytes max)")
        err.consumed = False  # the block is still in the stream: skip it before answering
        raise err from None
    except ConnectionError as exc:
        raise AGIConnectionClosed(f"connection lost: {exc}") from None
    if len(block) > max_bytes:
        raise AGIHeaderTooLarge(f"AGI environment larger than {max_bytes} bytes")
    text = block.decode("utf-8", errors="replace")
    count = text.count("\n") - 1
    if count > max_lines:
        raise AGIHeaderTooLarge(f"AGI environment has more than {max_lines} lines")
    env = parse_env_block(text)
    if len(env) != count:  # slow path, only to name the offending line
        for line in text.split("\n")[:-2]:
            parse_env_line(line)
        if not env:
            raise AGIProtocolError("empty AGI environment")
    return AGIEnvironment(env)


@dataclass(frozen=True, slots=True)
class StreamFileResult:
    digit: str | None  # escape digit pressed, if any
    endpos: int | None


@dataclass(frozen=True, slots=True)
class GetDataResult:
    digits: str
    timed_out: bool


class AGISession:
    """Commands of one FastAGI call. Not safe for concurrent use by several tasks."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        env: AGIEnvironment,
        *,
        command_timeout: float = 5.0,
        deadline: Deadline | None = None,
    ) -> None:
        self.env = env
        self._deadline = deadline or Deadline()
        self._reader = reader
        self._writer = writer
        self.command_timeout = command_timeout
        self.hung_up = False
        self._owed = 0  # responses of abandoned commands still to be discarded
        self.commands_sent = 0

    # -- low level -------------------------------------------------------------------------------

    async def _read_response_line(self) -> str:
        while True:
            line = await _readline(self._reader)
            if line == HANGUP_LINE:
                self.hung_up = True
                continue
            if line == "":
                continue
            return line

    async def _read_response(self, command: str) -> AGIResponse:
        line = await self._read_response_line()
        if line.startswith("200"):
            return parse_response_line(line)
        if line.startswith("510"):
            raise AGIInvalidCommand(command, line[4:].strip() or "Invalid or unknown command")
        if line.startswith("511"):
            self.hung_up = True
            raise AGIDeadChannel(command, line[4:].strip() or "Command Not Permitted on a dead channel")
        if line.startswith("520"):
            usage: list[str] = []
            while not line.startswith("520 "):
                if len(usage) > _MAX_USAGE_LINES:
                    raise AGIProtocolError("520 usage text never ended")
                line = await self._read_response_line()
                usage.append(line)
            raise AGIUsageError(command, "Invalid command syntax", usage[:-1])
        raise AGIProtocolError(f"unexpected AGI response {line[:120]!r} to {command!r}")

    async def command(self, name: str, *args: str | int, timeout: float | None = None) -> AGIResponse:
        """Send one command and return its ``200`` response; errors raise the typed tree."""
        data = format_command(name, *args)
        text = name  # for error messages; the arguments may carry personal data
        limit = self.command_timeout if timeout is None else timeout
        writer = self._writer
        deadline = self._deadline
        token = deadline.arm(limit)  # the session's one timer: no handle scheduled per command
        try:
            while self._owed:
                try:
                    await self._read_response(f"(abandoned command before {name})")
                except AGICommandError:
                    pass
                self._owed -= 1
            writer.write(data)
            self.commands_sent += 1
            self._owed += 1
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
            elif writer.transport.is_closing():
                raise ConnectionResetError("transport closed")
            response = await self._read_response(text)
            self._owed -= 1
            return response
        except AGICommandError:
            self._owed -= 1
            raise
        except asyncio.CancelledError:
            if deadline.expired(token):
                raise AGITimeout(f"no response to {text!r} within {limit:.3g} s") from None
            raise
        except ConnectionError as exc:
            raise AGIConnectionClosed(f"connection lost during {text!r}: {exc}") from None
        finally:
            deadline.disarm()

    async def set_variables(self, variables: Mapping[str, str | int]) -> None:
        """Set several variables, one command each, in order.

        Not pipelined on purpose: res_agi reads commands with ``fgets`` on a stdio stream and
        then polls the socket, so a second line already in the stdio buffer would wait until
        more bytes arrive (see ``run_agi`` in res_agi.c).
        """
        for name, value in variables.items():
            await self.set_variable(name, value)

    def _check_hangup(self, response: AGIResponse, command: str) -> None:
        if response.result == "-1":
            raise AGIHangup(f"{command}: result=-1 (caller hung up or channel failed)")

    # -- typed commands --------------------------------------------------------------------------

    async def answer(self) -> None:
        r = await self.command("ANSWER")
        self._check_hangup(r, "ANSWER")

    async def stream_file(self, filename: str, escape_digits: str = "", *, timeout: float = 60.0) -> StreamFileResult:
        """Play a prompt; returns the escape digit pressed, if any. A missing file is not an error
        for Asterisk (result=0, endpos=0) and is not one here either."""
        r = await self.command("STREAM FILE", filename, escape_digits, timeout=timeout)
        self._check_hangup(r, "STREAM FILE")
        code = r.result_int
        return StreamFileResult(chr(code) if code > 0 else None, r.endpos)

    async def get_data(self, filename: str, timeout_ms: int, max_digits: int) -> GetDataResult:
        """Play a prompt and collect up to ``max_digits`` DTMF digits."""
        budget = 60.0 + timeout_ms / 1000.0
        r = await self.command("GET DATA", filename, timeout_ms, max_digits, timeout=budget)
        self._check_hangup(r, "GET DATA")
        return GetDataResult(r.result, r.data == "timeout")

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        r = await self.command("WAIT FOR DIGIT", timeout_ms, timeout=1.0 + max(timeout_ms, 0) / 1000.0)
        self._check_hangup(r, "WAIT FOR DIGIT")
        code = r.result_int
        return chr(code) if code > 0 else None

    async def get_variable(self, name: str) -> str | None:
        r = await self.command("GET VARIABLE", name)
        return r.data if r.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        r = await self.command("GET FULL VARIABLE", expression)
        return r.data if r.result == "1" else None

    async def set_variable(self, name: str, value: str | int) -> None:
        await self.command("SET VARIABLE", name, value)

    async def exec(self, application: str, options: str = "", *, timeout: float | None = None) -> int:
        """Run a dialplan application; returns its result (``-2`` means no such application)."""
        r = await self.command("EXEC", application, options, timeout=timeout)
        return r.result_int

    async def hangup(self) -> None:
        await self.command("HANGUP")

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.command("VERBOSE", message.replace("\n", " "), level)

    # -- connection ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the socket: Asterisk then continues the dialplan at the next priority."""
        self._deadline.close()
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            pass
