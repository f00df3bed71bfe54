"""An out-of-scope caller over real RTP in the fake PBX (issue #23): "je me suis trompé de numéro" is an
answer, not a guess at a queue. The caller hears what the line is for and is asked once more; a second
out-of-scope answer reaches a person (never a hang-up); an answer in scope after the explanation routes.

The recogniser is a stand-in returning scripted understandings; the capture loop, prompts, endpointer, RTP
legs, the policy and the metrics are the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from agi_router.audit import record_of
from agi_router.callflow.flow import CallResult
from agi_router.callflow.legs import LegRegistry
from agi_router.callflow.speech import Recognition, SpeechCapture, SpeechConfig
from agi_router.media.rtp import PortPool
from agi_router.metrics import RouterMetrics
from agi_router.motives.catalogue import Catalogue
from agi_router.motives.understanding import Level, Understanding
from agi_router.policy.config import Policy
from agi_router.privacy import Pseudonymizer
from agi_router.prompts import FIXED_PROMPTS
from agi_router.speech.endpointer import EndpointerConfig
from tests.audio import needs_tts, silence, speak
from tests.fakeasterisk import FakeChannel, run_call
from tests.fakepbx import CallerScript, FakePBX
from tests.speechrig import agi_server, fake_pbx, mini_flow

pytestmark = needs_tts


def heard(level: Level, motive: str | None, text: str) -> Recognition:
    u = Understanding(
        text=text,
        level=level,
        motive_id=motive,
        confidence=0.95 if motive else 0.6,
        best=motive or "droits.autre",
        best_confidence=0.95 if motive else 0.3,
        runner_up="attestation_droits",
        runner_up_confidence=0.02,
        skill="droits",
        queue="droits",
        skill_confidence=0.5,
        out_of_scope=0.9 if level is Level.OUT_OF_SCOPE else 0.0,
        similarity=0.1 if level is Level.OUT_OF_SCOPE else 0.8,
    )
    return Recognition.of(u)


WRONG_NUMBER = heard(Level.OUT_OF_SCOPE, None, "je me suis trompé de numéro")
BANK_CARD = heard(Level.OUT_OF_SCOPE, None, "je voudrais faire opposition sur ma carte bancaire")
CARD_LOST = heard(Level.DEFLECTABLE, "carte_vitale_perdue", "j'ai perdu ma carte vitale")
NOT_UNDERSTOOD = heard(Level.REJECT, None, "euh le truc")


class ScriptedRecognizer:
    def __init__(self) -> None:
        self.answers: list[Recognition] = []

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        await asyncio.sleep(0.03)
        return self.answers.pop(0)

    async def reply(self, pcm: np.ndarray) -> Recognition:  # pragma: no cover - no confirmation here
        raise AssertionError("no confirmation turn expected")


@dataclass
class Rig:
    port: int
    pbx: FakePBX
    recognizer: ScriptedRecognizer
    results: list[CallResult]
    packets: dict[str, int]  # prompt name -> its length in 20 ms RTP packets
    seconds: dict[str, float]

    async def call(self) -> FakeChannel:
        ch = FakeChannel(callerid="0612345678", dial_handler=self.pbx.dial)
        return await run_call("127.0.0.1", self.port, ch, timeout=40)

    @property
    def last(self) -> CallResult:
        return self.results[-1]

    def after(self, prompt: str, text: str) -> CallerScript:
        """The caller lets ``prompt`` play to its end, then says ``text``."""
        return CallerScript(audio=said(text), start_after_s=self.seconds[prompt] + 0.4)

    def played(self, i: int) -> str:
        """Which prompt round ``i`` streamed (the one whose length matches the packets sent)."""
        sent = self.pbx.prompt_packets[i]
        return min(self.packets, key=lambda k: abs(self.packets[k] - sent))


@pytest.fixture
async def rig(mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer) -> AsyncIterator[Rig]:
    recognizer = ScriptedRecognizer()
    pcm = {
        "ask": speak("dites la raison de votre appel", "fr+f2"),
        "again": speak("je n'ai pas compris", "fr+f2"),
        "out_of_scope": speak(FIXED_PROMPTS["router/out-of-scope"][:64], "fr+f2"),
    }
    cfg = SpeechConfig(no_input_ms=1200, endpointer=EndpointerConfig(hangover_ms=400))
    results: list[CallResult] = []
    async with fake_pbx() as (pbx, ami):
        speech = SpeechCapture(
            LegRegistry(ami),
            PortPool(32400, 32500),
            recognizer,
            cfg,
            prompt=pcm["ask"],
            reprompt=pcm["again"],
            out_of_scope=pcm["out_of_scope"],
        )
        async with agi_server(mini_flow(mini_policy, mini_catalogue, pseudonymizer, speech, results.append)) as port:
            yield Rig(
                port,
                pbx,
                recognizer,
                results,
                {k: len(v) // 160 for k, v in pcm.items()},
                {k: len(v) / 8000 for k, v in pcm.items()},
            )


def said(text: str, voice: str = "fr+m3") -> np.ndarray:
    return np.concatenate([speak(text, voice), silence(1000)])


def rounds(r: CallResult) -> list[str]:
    return [x.outcome for x in r.speech_rounds]


def test_the_prompt_says_what_the_line_is_for() -> None:
    text = FIXED_PROMPTS["router/out-of-scope"]
    assert "assurance maladie" in text and "conseiller" in text and "raison de votre appel" in text


async def test_out_of_scope_twice_is_told_then_asked_again_then_a_person(rig: Rig) -> None:
    rig.recognizer.answers = [WRONG_NUMBER, BANK_CARD]
    rig.pbx.rounds = [rig.after("ask", "je me suis trompé de numéro"), rig.after("out_of_scope", "ma carte bancaire")]
    ch = await rig.call()
    # a person, never a hang-up: the policy's human queue
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_QUEUE"]) == ("queue", "accueil")
    assert ch.variables["ROUTER_MOTIVE"] == ""
    assert rounds(rig.last) == ["out_of_scope", "out_of_scope"]
    assert [rig.played(0), rig.played(1)] == ["ask", "out_of_scope"]  # told what the line is for
    assert len(rig.pbx.legs) == 2 and rig.pbx.hangups == rig.pbx.legs
    m = rig.last.motive
    assert m is not None and (m.motive_id, m.method, m.level) == (None, "speech", "out_of_scope")
    # counted per level in the metrics and in the audit trail
    metrics = RouterMetrics()
    metrics.observe_call(rig.last)
    sample = metrics.registry.get_sample_value
    assert sample("agi_router_speech_understanding_total", {"level": "out_of_scope"}) == 1
    assert sample("agi_router_speech_rounds_total", {"outcome": "out_of_scope"}) == 2
    assert record_of(rig.last)["motive"]["level"] == "out_of_scope"


async def test_out_of_scope_on_the_last_attempt_still_gets_the_explanation(rig: Rig) -> None:
    """Not understood, then out of scope (the 2 attempts used): told what the line is for, asked once more."""
    rig.recognizer.answers = [NOT_UNDERSTOOD, WRONG_NUMBER, CARD_LOST]
    rig.pbx.rounds = [
        rig.after("ask", "le truc"),
        rig.after("again", "je me suis trompé"),
        rig.after("out_of_scope", "j'ai perdu ma carte vitale"),
    ]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "carte_vitale_perdue"
    assert rounds(rig.last) == ["no_match", "out_of_scope", "recognised"]
    assert [rig.played(i) for i in range(3)] == ["ask", "again", "out_of_scope"]


async def test_an_answer_in_scope_after_the_explanation_routes(rig: Rig) -> None:
    rig.recognizer.answers = [WRONG_NUMBER, CARD_LOST]
    rig.pbx.rounds = [rig.after("ask", "je me suis trompé"), rig.after("out_of_scope", "j'ai perdu ma carte vitale")]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "carte_vitale_perdue"
    assert rounds(rig.last) == ["out_of_scope", "recognised"]
    assert rig.played(1) == "out_of_scope"
