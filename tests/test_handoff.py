"""The handoff to the agent (issue #19) through the router's real FastAGI and HTTP ports, with res_agi's wire
format played by tests/fakeasterisk.py: the context variables a routed call gets, the agent's correction
(``correct``) and the corrected caller's new leg (``transfer``), GET /calls/{ref} and its token, the whisper
modes, the headers' hygiene, the dialplan's header list, the RFC 4733 pcap writer. The same path through a
real Asterisk 22 with SIPp agents: tests/test_real_handoff.py."""

from __future__ import annotations

import asyncio
import json
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from agi_router.handoff import AgentContext, CallsAPI, Handoff, HandoffConfig, InMemoryContextStore, whisper_prompts
from agi_router.handoff.context import HEADER_VARIABLES
from agi_router.metrics import MetricsServer
from agi_router.motives.catalogue import Catalogue
from agi_router.prompts import prompt_texts
from agi_router.speech.evaluation import LABELS, append_labels
from loadtest.dtmf import rfc4733_pcap
from tests.fakeasterisk import FakeChannel, run_call
from tests.test_metrics import NO_ACCOUNT, Live, live_router, value

ROOT = Path(__file__).resolve().parents[1]
CAT = Catalogue.load()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async with live_router(tmp_path) as rig:
        yield rig


async def _agi(live: Live, script: str, *args: str, **variables: str) -> FakeChannel:
    ch = FakeChannel(script=script, args=list(args), variables=dict(variables), uniqueid="1763900099.7")
    return await run_call("127.0.0.1", live.agi_port, ch)


async def test_a_routed_call_carries_its_context_and_the_agent_corrects_it(live: Live, tmp_path: Path) -> None:
    ch = await live.call(NO_ACCOUNT, "1763900001.1", "attestation_droits")
    v = ch.variables
    assert (v["ROUTER_ACTION"], v["ROUTER_QUEUE"], v["ROUTER_DONE"]) == ("queue", "droits", "1")
    ref = v["__ROUTER_REF"]
    assert re.fullmatch(r"[a-z2-7]{16}", ref)
    assert (v["__ROUTER_H_QUEUE"], v["__ROUTER_H_MOTIVE"], v["__ROUTER_H_LABEL"]) == (
        "droits", "attestation_droits", "Attestation de droits",
    )  # fmt: skip
    assert (v["__ROUTER_H_SEGMENT"], v["__ROUTER_H_CALLS"], v["__ROUTER_H_METHOD"]) == ("no_account", "1", "variable")
    assert v["ROUTER_WHISPER"] == "router/whisper/attestation_droits"  # useful: a precise motive
    # the context variables are written before ROUTER_DONE (a partial write leaves the human default)
    names = [c.split()[2].strip('"') for c in ch.commands if c.startswith("SET VARIABLE")]
    assert names[-1] == "ROUTER_DONE" and "__ROUTER_REF" in names
    await live.router.flow.drain()

    # the agent types *7 then a digit: 7 is no skill, 3 is the queue the caller is already in
    bad = await _agi(live, "correct", "7", ROUTER_REF=ref)
    assert (bad.variables["ROUTER_CORRECT_QUEUE"], bad.variables["ROUTER_CORRECT_ERROR"]) == ("", "invalid")
    same = await _agi(live, "correct", "3", ROUTER_REF=ref)
    assert (same.variables["ROUTER_CORRECT_QUEUE"], same.variables["ROUTER_CORRECT_ERROR"]) == ("", "same")
    ok = await _agi(live, "correct", "1", ROUTER_REF=ref)
    assert ok.variables["ROUTER_CORRECT_QUEUE"] == "remboursements"

    # the caller's new leg: its context says where it comes from
    moved = await _agi(live, "transfer", ROUTER_REF=ref)
    mv = moved.variables
    assert (mv["__ROUTER_H_QUEUE"], mv["__ROUTER_H_FROM"], mv["__ROUTER_REF"]) == ("remboursements", "droits", ref)
    assert "transferred" in mv["__ROUTER_H_FLAGS"]
    assert mv["ROUTER_WHISPER"].split("&")[:2] == ["router/whisper/from-droits", "router/whisper/attestation_droits"]

    # recorded: metric, audit trail (no number, no pseudonym), context
    _, snap = await live.scrape()
    labels = {"from_queue": "droits", "to_queue": "remboursements", "method": "variable"}
    assert value(snap, "agi_router_agent_corrections_total", **labels) == 1
    audit = live.router.settings.path(live.router.settings.audit_file).read_text()
    events = [json.loads(x) for x in audit.splitlines() if '"event"' in x]
    assert [(e["event"], e["from_queue"], e["to_queue"], e["agent"]) for e in events] == [
        ("correction", "droits", "remboursements", "PJSIP/softphone")
    ]
    assert "caller" not in events[0]
    decision = next(json.loads(x) for x in audit.splitlines() if '"decision"' in x)
    assert decision["handoff"]["ref"] == ref
    ctx = await live.router.contexts.get(ref)  # type: ignore[union-attr]
    assert ctx is not None and ctx.transferred_from == "droits" and len(ctx.corrections) == 1


async def test_the_correction_without_a_stored_context_still_moves_the_caller(live: Live) -> None:
    # router restarted (in-process store lost): the channel's own header variable says where the caller was
    ch = await _agi(live, "correct", "2", ROUTER_REF="abcdefghijklmnop", ROUTER_H_QUEUE="droits")
    assert ch.variables["ROUTER_CORRECT_QUEUE"] == "indemnites"
    _, snap = await live.scrape()
    labels = {"from_queue": "droits", "to_queue": "indemnites", "method": "unknown"}
    assert value(snap, "agi_router_agent_corrections_total", **labels) == 1
    nothing = await _agi(live, "transfer", ROUTER_REF="abcdefghijklmnop")
    assert "ROUTER_WHISPER" not in nothing.variables  # the dialplan's values stand


async def test_deflected_callers_get_no_context(live: Live) -> None:
    ch = await live.call("0612345678", "1763900002.1", "attestation_droits")  # active account: deflected
    assert ch.variables["ROUTER_ACTION"] == "deflect"
    assert not any(k.startswith("__ROUTER") or k == "ROUTER_WHISPER" for k in ch.variables)


async def _http(port: int, path: str, token: str | None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_calls_api_needs_the_token_expires_and_never_shows_a_number(live: Live) -> None:
    clock = [1000.0]
    store = InMemoryContextStore(clock=lambda: clock[0])
    token = "t" * 40
    api = CallsAPI(store, token)
    http = MetricsServer(live.router.metrics, "127.0.0.1", 0, calls=api.answer)  # type: ignore[arg-type]
    await http.start()
    try:
        ch = await live.call(NO_ACCOUNT, "1763900003.1", "ij_montant")
        await live.router.flow.drain()
        ref = ch.variables["__ROUTER_REF"]
        ctx = await live.router.contexts.get(ref)  # type: ignore[union-attr]
        assert ctx is not None
        await store.put(ctx, ttl_s=60)
        port = http.address[1]
        assert (await _http(port, f"/calls/{ref}", None))[0] == 401
        assert (await _http(port, f"/calls/{ref}", "x" * 40))[0] == 401
        assert api.refused == 2
        assert (await _http(port, "/calls/../../etc/passwd", token))[0] == 404
        status, body = await _http(port, f"/calls/{ref}", token)
        assert status == 200
        data = json.loads(body)
        assert (data["ref"], data["queue"], data["motive"], data["calls_today"]) == (ref, "indemnites", "ij_montant", 1)
        assert "wait_s" in data and "samples" not in data and "transcript" not in data
        text = body.decode()
        assert NO_ACCOUNT[1:] not in text and "c-" not in text  # neither the number nor the pseudonym
        clock[0] += 61  # expired with the caller memory's TTL
        assert (await _http(port, f"/calls/{ref}", token))[0] == 404
        assert (await _http(port, "/metrics", None))[0] == 200  # the rest of the port is unchanged
    finally:
        await http.close()


def _ctx(**kw: object) -> AgentContext:
    base = AgentContext(
        ref="a" * 16, call_id="1.1", action="queue", queue="remboursements", priority=0, rule="queue.skill",
        segment="no_account", policy="3646-2024/1", motive="remboursements.autre", motive_label="x",
        short_label="x", level="", method="dtmf", confidence=1.0, heard=None, runner_up=None, parts=[],
        calls_today=1, flags=[], routed_at=0.0,
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def test_whisper_modes() -> None:
    generic = _ctx()
    assert whisper_prompts(generic, "off", CAT) == ()
    assert whisper_prompts(generic, "useful", CAT) == ()  # the agent's own queue says as much
    assert whisper_prompts(generic, "on", CAT) == ("router/whisper/remboursements-autre",)
    third = _ctx(calls_today=3, flags=["priority"])
    assert whisper_prompts(third, "useful", CAT) == (
        "router/whisper/remboursements-autre", "router/whisper/repeat-3", "router/whisper/flag-priority",
    )  # fmt: skip
    lost = _ctx(motive=None, flags=["not_understood"])
    assert whisper_prompts(lost, "useful", CAT) == ("router/whisper/flag-not_understood",)


def test_every_whisper_prompt_is_spoken_by_setup() -> None:
    texts = prompt_texts(CAT)
    queues = {s.queue for s in CAT.skills.values()}
    for m in CAT:
        for q in queues:
            for flags in ([], ["priority", "several", "not_understood", "other_language", "callback"]):
                ctx = _ctx(motive=m.id, calls_today=5, flags=flags, transferred_from=q)
                missing = [p for p in whisper_prompts(ctx, "on", CAT) if p not in texts]
                assert not missing, (m.id, missing)


def test_headers_never_carry_line_breaks_or_separators() -> None:
    ctx = _ctx(motive_label='Accidents du travail, maladies\r\nX-Evil: 1; "q"', flags=["priority", "repeat"])
    h = ctx.headers()
    assert h["Motive-Label"] == "Accidents du travail  maladies  X-Evil: 1   q"
    assert h["Flags"] == "priority repeat" and "Transferred-From" not in h
    variables = Handoff(CAT, b"k" * 32, HandoffConfig(headers=False)).variables(ctx)
    assert set(variables) == {"__ROUTER_REF", "ROUTER_WHISPER"}


def test_the_dialplan_adds_every_header_the_router_writes() -> None:
    text = (ROOT / "asterisk" / "extensions.conf").read_text()
    section = text[text.index("[agent-context]") : text.index("[router-correct]")]
    added = dict(re.findall(r"PJSIP_HEADER\(add,X-Router-([A-Za-z-]+)\)=\$\{(\w+)\}", section))
    assert added == HEADER_VARIABLES
    features = (ROOT / "asterisk" / "features.conf").read_text()
    assert re.search(r"^router-correct => \*7,self,Gosub\(router-correct,s,1\)$", features, re.M)
    assert "Set(DYNAMIC_FEATURES=router-correct)" in section  # on the agents' legs only


def test_the_ref_is_keyed_and_stable() -> None:
    a, b = Handoff(CAT, b"k" * 32), Handoff(CAT, b"j" * 32)
    assert a.ref("1.1") == a.ref("1.1") != a.ref("1.2")
    assert a.ref("1.1") != b.ref("1.1")


def test_rfc4733_pcap_is_one_increasing_stream(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    n = rfc4733_pcap("*71", path)
    data = path.read_bytes()
    assert struct.unpack("<IHHiIII", data[:24]) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    i, packets = 24, []
    while i < len(data):
        incl = struct.unpack("<IIII", data[i : i + 16])[2]
        frame = data[i + 16 : i + 16 + incl]
        i += 16 + incl
        rtp = frame[14 + 20 + 8 :]
        _, pt, seq, ts, _ = struct.unpack("!BBHII", rtp[:12])
        event, flags, _duration = struct.unpack("!BBH", rtp[12:16])
        packets.append((pt & 0x7F, seq, ts, event, bool(flags & 0x80)))
    assert len(packets) == n == 21
    assert {p[0] for p in packets} == {101}
    assert [p[1] for p in packets] == sorted(p[1] for p in packets)
    starts = [p[2] for p in packets]
    assert starts == sorted(starts) and len(set(starts)) == 3
    assert [p[3] for p in packets if p[4]][::3] == [10, 7, 1]  # *, 7, 1, each ended three times
    with pytest.raises(ValueError, match="not DTMF"):
        rfc4733_pcap("*7x", path)


def test_agent_labels_are_appended_once(tmp_path: Path) -> None:
    assert append_labels(tmp_path, [("s1", "motive", "droits.autre"), ("s2", "motive", "droits.autre")]) == 2
    assert append_labels(tmp_path, [("s1", "motive", "indemnites.autre")]) == 0  # a label already there stays
    lines = (tmp_path / LABELS).read_text().splitlines()
    assert lines == ["id\tkind\texpected\treference", "s1\tmotive\tdroits.autre\t", "s2\tmotive\tdroits.autre\t"]


def test_catalogue_short_labels() -> None:
    assert CAT.motives["prise_en_charge_ald"].short == "A L D"
    assert CAT.motives["ij_montant"].short == "montant des indemnités journalières"  # default: the label
    assert all(len(m.short.split()) <= 9 for m in CAT)


async def test_redis_context_store_shares_and_expires(redis_server: str) -> None:
    """Several routers: one writes the context, another reads it; it expires with its TTL; a dead Redis is a
    StateStoreError (the call's route never depends on it)."""
    from agi_router.exceptions import StateStoreError
    from agi_router.handoff import RedisContextStore

    a = RedisContextStore(redis_server, prefix="t-ctx:", timeout=0.5)
    b = RedisContextStore(redis_server, prefix="t-ctx:", timeout=0.5)
    try:
        ctx = _ctx(ref="b" * 16, flags=["priority"], samples=["s1"])
        await a.put(ctx, ttl_s=0.3)
        got = await b.get("b" * 16)
        assert got == ctx
        await asyncio.sleep(0.5)
        assert await b.get("b" * 16) is None
    finally:
        await a.close()
        await b.close()
    dead = RedisContextStore("redis://127.0.0.1:1/0", timeout=0.2)
    with pytest.raises(StateStoreError):
        await dead.get("c" * 16)
    await dead.close()


def test_a_correction_labels_the_calls_samples_with_the_chosen_skill(tmp_path: Path) -> None:
    from agi_router.audit import AuditLog
    from agi_router.handoff import AgentEvents
    from agi_router.handoff.correction import Correction
    from agi_router.metrics import RouterMetrics

    audit = AuditLog(tmp_path / "audit.jsonl")
    (tmp_path / "samples").mkdir()  # (created with the first sample kept)
    events = AgentEvents(
        Handoff(CAT, b"k" * 32), InMemoryContextStore(), RouterMetrics(), audit, lambda: 60.0,
        samples_folder=tmp_path / "samples",
    )  # fmt: skip
    move = Correction("1.1", "a" * 16, "droits", "indemnites", "speech", "attestation_droits", "PJSIP/agent2", 0.0)
    events.corrected(replace(move, samples=("s1", "s2")))
    events.corrected(replace(move, to_queue="accueil", samples=("s3",)))  # a person: no motive to learn
    audit.close()
    lines = (tmp_path / "samples" / LABELS).read_text().splitlines()
    assert lines[1:] == ["s1\tmotive\tindemnites.autre\t", "s2\tmotive\tindemnites.autre\t"]
    off = AgentEvents(Handoff(CAT, b"k" * 32), InMemoryContextStore(), RouterMetrics(), audit, lambda: 60.0)
    off.corrected(replace(move, samples=("s4",)))  # sampling off: nothing written
    assert "s4" not in (tmp_path / "samples" / LABELS).read_text()


async def test_calls_api_says_503_when_the_store_does_not_answer() -> None:
    from agi_router.exceptions import StateStoreError

    class Down(InMemoryContextStore):
        async def get(self, ref: str) -> AgentContext | None:
            raise StateStoreError("redis unreachable")

    api = CallsAPI(Down(), "t" * 20)
    status, _, body = await api.answer("/calls/" + "a" * 16, {"authorization": "Bearer " + "t" * 20})
    assert (status, body) == (503, b"the context store does not answer\n")
