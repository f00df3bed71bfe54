"""The confirmation turn over real RTP in the fake PBX: "Vous appelez pour X ? Dites oui ou non, ou tapez
1 ou 2." — yes, no, 1, 2, silence, an answer not understood, barge-in, "conseiller" and 0 during it.

The recogniser is a stand-in that returns scripted transcripts; what it returns goes through the real
yes/no lexicon (``motives/replies.py``) and the real capture loop, endpointer and RTP legs."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from agi_router.callflow.flow import CallResult
from agi_router.callflow.legs import LegRegistry
from agi_router.callflow.speech import Recognition, SpeechCapture, SpeechConfig
from agi_router.exceptions import ConfigError
from agi_router.media.rtp import PortPool
from agi_router.motives.catalogue import Catalogue
from agi_router.motives.replies import reply_of_text
from agi_router.motives.understanding import Level, Understanding
from agi_router.policy.config import Policy
from agi_router.privacy import Pseudonymizer
from agi_router.speech.endpointer import EndpointerConfig
from agi_router.speech.sampling import Sampler, SampleStore
from tests.audio import needs_tts, silence, speak
from tests.fakeasterisk import FakeChannel, run_call
from tests.fakepbx import CallerScript, FakePBX
from tests.speechrig import agi_server, fake_pbx, mini_flow

pytestmark = needs_tts


def heard(level: Level, motive: str | None, confidence: float = 0.5) -> Recognition:
    u = Understanding(
        text="euh c'est pour l'attestation",
        level=level,
        motive_id=motive,
        confidence=confidence,
        best=motive,
        best_confidence=confidence,
        runner_up="releve_remboursements",
        runner_up_confidence=0.2,
        skill="droits",
        queue="droits",
        skill_confidence=0.6,
    )
    return Recognition.of(u)


UNSURE = heard(Level.CONFIRM, "attestation_droits", 0.45)
NOT_UNDERSTOOD = heard(Level.REJECT, None, 0.1)
SURE_CARD = heard(Level.DEFLECTABLE, "carte_vitale_perdue", 0.95)


class ScriptedRecognizer:
    def __init__(self) -> None:
        self.answers: list[Recognition] = [UNSURE]
        self.replies: list[str] = []  # what Whisper "heard" in each confirmation answer
        self.reply_calls = 0

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        await asyncio.sleep(0.03)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    async def reply(self, pcm: np.ndarray) -> Recognition:
        await asyncio.sleep(0.03)
        self.reply_calls += 1
        text = self.replies.pop(0)
        r = reply_of_text(text)
        return Recognition(None, 0.0, None, text, human_requested=r.value == "person", reply=r.value)


@dataclass
class Rig:
    port: int
    pbx: FakePBX
    speech: SpeechCapture
    recognizer: ScriptedRecognizer
    results: list[CallResult]
    question_packets: int

    async def call(self, **kw: object) -> FakeChannel:
        ch = FakeChannel(callerid="0612345678", dial_handler=self.pbx.dial, **kw)  # type: ignore[arg-type]
        return await run_call("127.0.0.1", self.port, ch, timeout=40)

    @property
    def last(self) -> CallResult:
        return self.results[-1]


@pytest.fixture
async def rig(mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer) -> AsyncIterator[Rig]:
    recognizer = ScriptedRecognizer()
    prompt = speak("dites la raison de votre appel", "fr+f2")
    question = speak("vous appelez pour une attestation de droits ? dites oui ou non", "fr+f2")
    cfg = SpeechConfig(no_input_ms=1200, confirm_no_input_ms=1000, endpointer=EndpointerConfig(hangover_ms=400))
    results: list[CallResult] = []
    async with fake_pbx() as (pbx, ami):
        speech = SpeechCapture(
            LegRegistry(ami),
            PortPool(32200, 32300),
            recognizer,
            cfg,
            prompt=prompt,
            reprompt=prompt,
            confirm_prompt=lambda motive: question if motive == "attestation_droits" else None,
        )
        async with agi_server(mini_flow(mini_policy, mini_catalogue, pseudonymizer, speech, results.append)) as port:
            yield Rig(port, pbx, speech, recognizer, results, len(question) // 160)


def said(text: str, voice: str = "fr+m3") -> np.ndarray:
    return np.concatenate([speak(text, voice), silence(1000)])


def rounds(r: CallResult) -> list[str]:
    return [x.outcome for x in r.speech_rounds]


async def test_yes_confirms_and_the_policy_acts_on_the_confirmed_motive(rig: Rig) -> None:
    rig.recognizer.replies = ["Oui, c'est ça."]
    rig.pbx.rounds = [CallerScript(audio=said("euh l'attestation")), CallerScript(audio=said("oui c'est ça"))]
    ch = await rig.call()
    assert (ch.variables["ROUTER_MOTIVE"], ch.variables["ROUTER_ACTION"]) == ("attestation_droits", "deflect")
    m = rig.last.motive
    assert m is not None and (m.confidence, m.level, m.method) == (1.0, "confirmed", "speech")
    assert rounds(rig.last) == ["to_confirm", "confirm_yes"]
    assert len(rig.pbx.legs) == 2 and rig.pbx.hangups == rig.pbx.legs
    # barge-in: the question stopped at the caller's first words (it starts 0.3 s after the bridge)
    assert rig.speech.rounds[-1].barged_in and 0 < rig.pbx.prompt_packets[1] < rig.question_packets - 40
    assert rig.last.speech_to_route_s is not None and rig.last.speech_to_route_s < 1.0
    # what the caller waited: from the last voiced audio of the "oui", the hangover included
    hangover = rig.speech.config.endpointer.hangover_ms / 1000
    assert rig.last.voice_to_route_s is not None
    assert rig.last.speech_to_route_s + hangover - 0.1 < rig.last.voice_to_route_s < rig.last.speech_to_route_s + 1.0
    from agi_router.metrics import RouterMetrics

    metrics = RouterMetrics()
    metrics.observe_call(rig.last)
    sample = metrics.registry.get_sample_value
    assert sample("agi_router_speech_understanding_total", {"level": "confirmed"}) == 1
    assert sample("agi_router_speech_rounds_total", {"outcome": "confirm_yes"}) == 1
    assert sample("agi_router_speech_rounds_total", {"outcome": "to_confirm"}) == 1


async def test_no_asks_again_then_the_new_answer_routes(rig: Rig) -> None:
    rig.recognizer.answers = [UNSURE, SURE_CARD]
    rig.recognizer.replies = ["Non, pas du tout."]
    rig.pbx.rounds = [
        CallerScript(audio=said("euh l'attestation")),
        CallerScript(audio=said("non")),
        CallerScript(audio=said("j'ai perdu ma carte vitale")),
    ]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "carte_vitale_perdue"
    assert rounds(rig.last) == ["to_confirm", "confirm_no", "recognised"]


@pytest.mark.parametrize(("digit", "motive", "outcome"), [("1", "attestation_droits", "deflect"), ("2", "", "queue")])
async def test_digits_1_and_2_answer_the_question(rig: Rig, digit: str, motive: str, outcome: str) -> None:
    rig.recognizer.answers = [UNSURE, NOT_UNDERSTOOD]
    rig.pbx.rounds = [CallerScript(audio=said("euh l'attestation")), CallerScript(dtmf=digit, start_after_s=0.5)]
    ch = await rig.call()
    assert (ch.variables["ROUTER_MOTIVE"], ch.variables["ROUTER_ACTION"]) == (motive, outcome)
    if digit == "2":  # no: asked again (silence), then the menu (no digit), then a person
        assert rounds(rig.last) == ["to_confirm", "dtmf", "no_input"]
        assert ch.variables["ROUTER_RULE"] == "motive.none"
    assert rig.recognizer.reply_calls == 0


async def test_silence_then_yes(rig: Rig) -> None:
    rig.recognizer.replies = ["ouais"]
    rig.pbx.rounds = [
        CallerScript(audio=said("euh l'attestation")),
        CallerScript(),  # says nothing: the question once more
        CallerScript(audio=said("ouais")),
    ]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
    assert rounds(rig.last) == ["to_confirm", "no_input", "confirm_yes"]
    assert rig.pbx.prompt_packets[1] >= rig.question_packets - 5  # heard in full when nobody barges in


async def test_answers_not_understood_twice_then_the_usual_fallback(rig: Rig) -> None:
    rig.recognizer.answers = [UNSURE, NOT_UNDERSTOOD]
    rig.recognizer.replies = ["Sous-titres réalisés par la communauté d'Amara.org", "oui... enfin non"]
    rig.pbx.rounds = [
        CallerScript(audio=said("euh l'attestation")),
        CallerScript(audio=said("ah bah je sais pas")),
        CallerScript(audio=said("oui enfin non")),
        CallerScript(audio=said("le truc")),
    ]
    ch = await rig.call()
    assert rounds(rig.last) == ["to_confirm", "no_match", "no_match", "no_match"]
    assert (ch.variables["ROUTER_QUEUE"], ch.variables["ROUTER_RULE"]) == ("accueil", "motive.none")


@pytest.mark.parametrize("how", ["speech", "dtmf"])
async def test_a_person_during_the_question(rig: Rig, how: str) -> None:
    rig.recognizer.replies = ["Je veux parler à un conseiller."]
    answer = CallerScript(audio=said("un conseiller")) if how == "speech" else CallerScript(dtmf="0")
    rig.pbx.rounds = [CallerScript(audio=said("euh l'attestation")), answer]
    ch = await rig.call()
    assert (ch.variables["ROUTER_QUEUE"], ch.variables["ROUTER_RULE"]) == ("accueil", "motive.human")
    assert rounds(rig.last) == ["to_confirm", "human_request" if how == "speech" else "dtmf"]


async def test_no_question_recorded_for_the_motive_means_asking_again(rig: Rig) -> None:
    rig.recognizer.answers = [heard(Level.CONFIRM, "releve_remboursements", 0.4), SURE_CARD]
    rig.pbx.rounds = [CallerScript(audio=said("euh le relevé")), CallerScript(audio=said("ma carte vitale"))]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "carte_vitale_perdue"
    assert rounds(rig.last) == ["to_confirm", "recognised"]


# ------------------------------------------------------------------------------------------ opt-in sampling


@pytest.mark.parametrize("consent", ["1", "0", None])
async def test_sampling_keeps_audio_only_with_consent_and_never_the_number(
    rig: Rig, tmp_path: Path, pseudonymizer: Pseudonymizer, consent: str | None
) -> None:
    store = SampleStore(tmp_path / "samples", pseudonymizer.subkey(b"samples v1"))
    rig.speech.sampler = Sampler(store, 1.0)
    rig.recognizer.replies = ["oui"]
    rig.pbx.rounds = [CallerScript(audio=said("euh l'attestation")), CallerScript(audio=said("oui"))]
    variables = {"ROUTER_SAMPLING_CONSENT": consent} if consent is not None else {}
    ch = await rig.call(variables=variables, uniqueid="1733140000.42")
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
    files = list(store)  # oldest first
    if consent != "1":
        assert files == []  # no consent (or the notice is off): nothing kept, not even a folder entry
        return
    assert len(files) == 2  # the motive utterance and the answer to the question
    pseudonym = pseudonymizer.of_e164("+33612345678")
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o600
        blob = f.read_bytes()
        for secret in (b"0612345678", b"33612345678", pseudonym.encode(), b"1733140000.42"):
            assert secret not in blob
    first, second = (store.read(f) for f in files)
    assert (first.mode, second.mode) == ("motive", "confirm")
    assert first.understood["level"] == "confirm" and second.understood == {"reply": "yes"}
    assert 0.5 < first.seconds < 4 and second.transcript == "oui"
    plain = json.dumps([first.understood, first.transcript, first.at, first.id, second.understood])
    for secret in ("0612345678", pseudonym, "1733140000.42"):
        assert secret not in plain
    other = SampleStore(tmp_path / "samples", b"another key of 32 bytes........!")
    with pytest.raises(ConfigError, match="another key"):
        other.read(files[0])


def test_sampling_is_off_by_default(tmp_path: Path) -> None:
    from agi_router.app import build_sampler
    from agi_router.config import Settings

    assert build_sampler(Settings(data_dir=tmp_path)) is None


def test_retention_and_size_limits(tmp_path: Path) -> None:
    store = SampleStore(tmp_path, b"k" * 32, retention_days=1, max_mb=1)
    pcm = np.zeros(8000 * 10, dtype=np.int16)  # 160 kB each
    paths = [store.save(pcm, mode="motive", transcript=f"t{i}", understood={}) for i in range(3)]
    old = time.time() - 2 * 86400
    os.utime(paths[0], (old, old))
    assert store.purge() == 1 and sorted(store) == sorted(paths[1:])
    more = [store.save(pcm, mode="motive", transcript="x", understood={}) for _ in range(8)]
    kept = sorted(store)
    assert sum(p.stat().st_size for p in kept) <= 1024 * 1024 and more[-1] in kept
