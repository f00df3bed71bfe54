"""res_agi wire format: environment lines, responses, quoting; table-driven like aiortc's tests."""

from __future__ import annotations

import pytest

from agi_router.agi.protocol import (
    AGIEnvironment,
    AGIResponse,
    format_command,
    parse_env_line,
    parse_response_line,
    quote_arg,
)
from agi_router.exceptions import AGIProtocolError
from tests.fakeasterisk import environment, parse_args


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("200 result=1", AGIResponse(200, "1")),
        ("200 result=0", AGIResponse(200, "0")),
        ("200 result=-1", AGIResponse(200, "-1")),
        ("200 result=1 (fr)", AGIResponse(200, "1", "fr")),
        ("200 result=1 (value with (parens) inside)", AGIResponse(200, "1", "value with (parens) inside")),
        ("200 result=49 endpos=12345", AGIResponse(200, "49", None, 12345)),
        ("200 result=0 endpos=0", AGIResponse(200, "0", None, 0)),
        ("200 result= (timeout)", AGIResponse(200, "", "timeout")),
        ("200 result=12 (timeout)", AGIResponse(200, "12", "timeout")),
        ("200 result=1 ()", AGIResponse(200, "1", "")),
        ("200 result=1\r", AGIResponse(200, "1")),
    ],
)
def test_parse_response(line: str, expected: AGIResponse) -> None:
    assert parse_response_line(line) == expected


@pytest.mark.parametrize(
    "line",
    ["", "200", "200 result", "200 result=abc", "201 result=1", "hello", "200 result=1 (unclosed", "200 result=1 x"],
)
def test_parse_response_rejects_malformed(line: str) -> None:
    with pytest.raises(AGIProtocolError, match="malformed AGI response"):
        parse_response_line(line)


def test_result_int_is_checked() -> None:
    assert AGIResponse(200, "-1").result_int == -1
    with pytest.raises(AGIProtocolError, match="not an integer"):
        _ = AGIResponse(200, "").result_int


@pytest.mark.parametrize(
    ("line", "kv"),
    [
        ("agi_network: yes", ("agi_network", "yes")),
        ("agi_callerid: 0612345678", ("agi_callerid", "0612345678")),
        ("agi_accountcode: ", ("agi_accountcode", "")),
        ("agi_accountcode:", ("agi_accountcode", "")),
        ("agi_arg_1: a: b", ("agi_arg_1", "a: b")),
    ],
)
def test_parse_env_line(line: str, kv: tuple[str, str]) -> None:
    assert parse_env_line(line) == kv


@pytest.mark.parametrize("line", ["hello", "agi_x value", "AGI_CALLERID: 1", ": x", "x_agi: 1"])
def test_parse_env_line_rejects(line: str) -> None:
    with pytest.raises(AGIProtocolError, match="malformed AGI environment line"):
        parse_env_line(line)


def test_environment_accessors() -> None:
    env = AGIEnvironment(dict(parse_env_line(x) for x in environment(args=("attestation_droits", "x y"))))
    assert env.network_script == "3646"
    assert env.callerid == "0612345678"
    assert env.args == ("attestation_droits", "x y")
    assert env.uniqueid == "1763900000.1"
    assert AGIEnvironment({"agi_network_script": "/3646?x=1"}).network_script == "3646"


@pytest.mark.parametrize(
    "value",
    ["plain", "with space", 'quote " inside', "back\\slash", "", "ümlaut é", "a&b,c|d", "trailing\\"],
)
def test_quoting_round_trips_through_res_agi_parse_args(value: str) -> None:
    line = format_command("SET VARIABLE", "NAME", value).decode().rstrip("\n")
    assert parse_args(line) == ["SET", "VARIABLE", "NAME", value]


def test_quote_refuses_line_breaks() -> None:
    with pytest.raises(ValueError, match="line breaks"):
        quote_arg("a\nb")
