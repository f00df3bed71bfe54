"""End of turn decided by what was said (speech/turn.py, issue #21): the decision table, the endpointer's
early end and extension, and the whole capture over real RTP through the fake PBX — a complete answer ends
the turn before the hangover, a caller who pauses after "et" is not cut off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agi_router.callflow.legs import LegRegistry
from agi_router.callflow.speech import Recognition, SpeechCapture, SpeechConfig
from agi_router.media.rtp import PortPool
from agi_router.motives.catalogue import Catalogue
from agi_router.motives.understanding import Level, Understanding
from agi_router.policy.config import Policy
from agi_router.privacy import Pseudonymizer
from agi_router.speech.endpointer import Endpointer, EndpointerConfig, SpeechEnd, SpeechPause
from agi_router.speech.turn import judge_turn, last_word
from tests.audio import needs_tts, silence, speak
from tests.fakeasterisk import FakeChannel, run_call
from tests.fakepbx import CallerScript, FakePBX
from tests.speechrig import agi_server, fake_pbx, mini_flow


@pytest.mark.parametrize(
    "transcript, level, confidence, reply, action, reason",
    [
        ("Je voudrais une attestation de droits.", "deflectable", 0.95, "", "end", "complete"),
        ("c'est pour un arrêt de travail", "queue", 0.7, "", "end", "complete"),
        ("je voudrais parler à un conseiller", "person", 1.0, "", "end", "complete"),
        ("j'ai perdu ma carte vitale et", "deflectable", 0.95, "", "extend", "connective"),
        ("c'est parce que", "queue", 0.9, "", "extend", "connective"),
        ("je voudrais euh", "reject", 0.1, "", "extend", "hesitation"),
        ("Euh...", None, 0.0, "", "extend", "hesitation"),
        ("je voudrais savoir", "reject", 0.2, "", "wait", "not_understood"),
        ("c'est pour un arrêt de travail", "confirm", 0.6, "", "wait", "not_understood"),
        ("oui", None, 0.0, "yes", "end", "complete"),
        ("", None, 0.0, "", "wait", "empty"),
    ],
)
def test_the_decision(transcript: str, level: str | None, confidence: float, reply: str, action: str,
                      reason: str) -> None:  # fmt: skip
    d = judge_turn(transcript, level, confidence, reply=reply)
    assert (d.action, d.reason) == (action, reason)


def test_a_confidence_floor_makes_it_wait() -> None:
    assert judge_turn("arrêt de travail", "queue", 0.6, min_confidence=0.8).action == "wait"
    assert last_word("Il m\u2019a dit qu\u2019") == "qu" and last_word("...") == ""


def _frames(voiced: bool, n: int) -> list[np.ndarray]:
    if voiced:  # speech webrtcvad hears: a sentence, repeated as needed
        pcm = np.tile(speak("bonjour je voudrais une attestation"), 3)
        return [pcm[i * 160 : (i + 1) * 160] for i in range(n)]
    return [np.zeros(160, np.int16)] * n


def _run(ep: Endpointer, frames: list[np.ndarray], t0: float = 0.0) -> list[object]:
    out: list[object] = []
    for i, f in enumerate(frames):
        out += ep.feed(f, t0 + 20 * i)
    return out


@needs_tts
def test_the_endpointer_ends_at_a_pause_on_request_and_extends_the_hangover() -> None:
    cfg = EndpointerConfig(pause_ms=200, hangover_ms=500)
    ep = Endpointer(cfg)
    # 0.8 s of speech, then 400 ms of silence (webrtcvad's own smoothing calls the first ~120 ms voiced)
    events = _run(ep, _frames(True, 40) + _frames(False, 20))
    assert any(isinstance(e, SpeechPause) for e in events) and ep.paused
    end = ep.end_now()
    assert isinstance(end, SpeechEnd) and ep.done and ep.end_now() is None
    assert abs(len(end.audio) / 8 - (800 + cfg.pre_roll_ms + cfg.tail_ms)) <= 300  # the utterance, trimmed

    ep = Endpointer(cfg)
    _run(ep, _frames(True, 40) + _frames(False, 20))
    ep.extend(400)
    events = _run(ep, _frames(False, 25), t0=20 * 60)  # 500 ms more: ~780 ms of silence < 500 + 400
    assert not any(isinstance(e, SpeechEnd) for e in events) and ep.paused
    events = _run(ep, _frames(False, 10), t0=20 * 85)
    assert any(isinstance(e, SpeechEnd) for e in events)


# --- through the fake PBX, over real RTP ------------------------------------------------------------


def _understood(text: str, level: Level, motive: str | None, confidence: float) -> Recognition:
    u = Understanding(text, level, motive, confidence, motive, confidence, None, 0.0, None, None, 0.0)
    return Recognition.of(u)


class ByLength:
    """A recogniser whose transcript depends on how much it was given: the first clause alone, or all."""

    def __init__(self, short: Recognition, full: Recognition, full_from_s: float, delay: float = 0.08) -> None:
        self.short, self.full, self.full_from_s, self.delay = short, full, full_from_s, delay
        self.heard: list[np.ndarray] = []

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        await asyncio.sleep(self.delay)
        self.heard.append(pcm)
        return self.full if len(pcm) / 8000 >= self.full_from_s else self.short


@contextlib.asynccontextmanager
async def _capture(
    recognizer: ByLength | Keeps, turn: str, policy: Policy, catalogue: Catalogue, pseudo: Pseudonymizer
) -> AsyncIterator[tuple[int, FakePBX, SpeechCapture]]:
    prompt = speak("dites la raison de votre appel", "fr+f2")
    cfg = SpeechConfig(no_input_ms=1500, turn=turn, endpointer=EndpointerConfig(hangover_ms=550))
    async with fake_pbx() as (pbx, ami):
        speech = SpeechCapture(LegRegistry(ami), PortPool(32200, 32300), recognizer, cfg, prompt=prompt)
        async with agi_server(mini_flow(policy, catalogue, pseudo, speech, lambda _r: None)) as port:
            yield port, pbx, speech


async def _call(port: int, pbx: FakePBX) -> FakeChannel:
    ch = FakeChannel(dial_handler=pbx.dial, callerid="0612345678")
    return await run_call("127.0.0.1", port, ch, timeout=30)


@needs_tts
async def test_a_complete_answer_ends_the_turn_before_the_hangover(
    mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer
) -> None:
    full = _understood("je voudrais une attestation de droits", Level.DEFLECTABLE, "attestation_droits", 0.95)
    delays = {}
    for turn in ("semantic", "silence"):
        rec = ByLength(full, full, 0.0)
        async with _capture(rec, turn, mini_policy, mini_catalogue, pseudonymizer) as (port, pbx, speech):
            pbx.rounds = [CallerScript(audio=np.concatenate([speak("je voudrais une attestation de droits"),
                                                            silence(1500)]), start_after_s=0.5)]  # fmt: skip
            ch = await _call(port, pbx)
            assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
            outcome = speech.rounds[-1]
            assert outcome.turn == ("complete" if turn == "semantic" else "silence"), outcome
            delays[turn] = outcome.endpoint_delay_s
    assert delays["semantic"] is not None and delays["silence"] is not None
    # semantic: the pause (200 ms) + the speculative recognition (80 ms here); silence: the 550 ms hangover
    assert delays["semantic"] < 0.45 <= 0.55 <= delays["silence"] + 0.02, delays


@needs_tts
async def test_a_caller_who_pauses_after_et_is_not_cut_off(
    mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer
) -> None:
    first, rest = speak("j'ai perdu ma carte vitale et"), speak("je voudrais en commander une nouvelle")
    audio = np.concatenate([first, silence(700), rest, silence(1500)])  # a 700 ms pause after "et"
    short = _understood("j'ai perdu ma carte vitale et", Level.DEFLECTABLE, "carte_vitale_perdue", 0.95)
    full = _understood("j'ai perdu ma carte vitale et je voudrais en commander une nouvelle", Level.DEFLECTABLE,
                       "carte_vitale_perdue", 0.97)  # fmt: skip
    heard = {}
    for turn in ("semantic", "silence"):
        rec = ByLength(short, full, (len(first) + 5600 + len(rest) // 2) / 8000)
        async with _capture(rec, turn, mini_policy, mini_catalogue, pseudonymizer) as (port, pbx, speech):
            pbx.rounds = [CallerScript(audio=audio, start_after_s=0.5)] * 2
            await _call(port, pbx)
            heard[turn] = (max(len(h) for h in rec.heard) / 8000, speech.rounds[0].extended, speech.rounds[0].turn)
    # semantic: the hangover was lengthened after "et" and the whole sentence was recognised
    assert heard["semantic"][1] == "connective" and heard["semantic"][0] >= (len(first) + len(rest)) / 8000
    # silence (today's rule): the 550 ms hangover cut the caller after "et"
    assert heard["silence"][1] == "" and heard["silence"][0] < (len(first) + 5600) / 8000 + 0.5, heard


# --- RTP held and released by a congested network --------------------------------------------------


class Keeps:
    """Keeps every utterance it is given; answers a confident motive."""

    def __init__(self) -> None:
        self.heard: list[np.ndarray] = []

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        await asyncio.sleep(0.05)
        self.heard.append(pcm)
        return _understood("", Level.DEFLECTABLE, "attestation_droits", 0.95)


@needs_tts
@pytest.mark.parametrize("held_s", [0.4, 0.9])
async def test_rtp_held_then_released_does_not_cut_the_caller_or_change_the_audio(
    mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer, held_s: float
) -> None:
    """Issue #21: packets held by the network mid-sentence (0.4 s: over the pause; 0.9 s: over the 550 ms
    hangover), then released in a burst. The RTP timestamps show no gap: the caller did not stop talking.
    The recogniser must get the same audio as without the stall, in one turn."""
    # a phone that sends while its caller is silent: 0.6 s of silence packets (during the prompt), the sentence
    sentence = np.concatenate([silence(600), speak("je voudrais une attestation de droits pour ma mutuelle"),
                               silence(1500)])  # fmt: skip
    heard = {}
    for stall in (0.0, held_s):
        rec = Keeps()
        async with _capture(rec, "silence", mini_policy, mini_catalogue, pseudonymizer) as (port, pbx, _speech):
            pbx.rounds = [CallerScript(audio=sentence, start_after_s=0.1, stalls={90: stall} if stall else {})]
            ch = await _call(port, pbx)
            assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
            assert len(pbx.legs) == 1  # one turn: not cut, not re-asked
            heard[stall] = rec.heard[-1]
    assert len(heard[held_s]) == len(heard[0.0]), (len(heard[held_s]) / 8, len(heard[0.0]) / 8)
    assert np.array_equal(heard[held_s], heard[0.0])
