"""Live-audio motive capture through the FastAGI server, a fake PBX (AGI + AMI + real RTP datagrams)
and the real endpointer; the recogniser is a stand-in here (test_motive_classifier.py and the
whisper tests cover recognition)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from agi_router.ami.client import AMIClient
from agi_router.callflow.flow import CallResult
from agi_router.callflow.legs import LegRegistry
from agi_router.callflow.speech import Recognition, SpeechCapture, SpeechConfig
from agi_router.media.rtp import PortPool
from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy, Safeguards
from agi_router.privacy import Pseudonymizer
from agi_router.speech.endpointer import EndpointerConfig
from tests.audio import needs_tts, silence, speak, speech_bounds_ms
from tests.fakeasterisk import FakeChannel, run_call
from tests.fakepbx import CallerScript, FakePBX
from tests.speechrig import agi_server, fake_pbx, mini_flow

pytestmark = needs_tts
SENTENCE = "bonjour je voudrais une attestation de droits"


class ScriptedRecognizer:
    """Answers in turn from a list; keeps the audio it was given."""

    def __init__(self, answers: list[Recognition], delay: float = 0.05) -> None:
        self.answers = answers
        self.delay = delay
        self.heard: list[np.ndarray] = []
        self.calls = 0

    async def recognize(self, pcm: np.ndarray) -> Recognition:
        self.calls += 1
        await asyncio.sleep(self.delay)
        self.heard.append(pcm)
        return self.answers[min(len(self.heard), len(self.answers)) - 1]


@dataclass
class Rig:
    port: int
    pbx: FakePBX
    ami: AMIClient
    speech: SpeechCapture
    recognizer: ScriptedRecognizer
    results: list[CallResult]

    async def call(self, **kw: object) -> FakeChannel:
        kw.setdefault("callerid", "0612345678")
        ch = FakeChannel(dial_handler=self.pbx.dial, **kw)  # type: ignore[arg-type]
        return await run_call("127.0.0.1", self.port, ch, timeout=30)


@pytest.fixture
async def rig(mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer) -> AsyncIterator[Rig]:
    async with _rig(mini_policy, mini_catalogue, pseudonymizer) as r:
        yield r


@pytest.fixture
async def safe_rig(mini_policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer) -> AsyncIterator[Rig]:
    """The same, on a policy with the two dialogue safeguards of the bundled safeguarded policy."""
    g = Safeguards(other_language=True, person_after_failed_captures=2)
    async with _rig(dataclasses.replace(mini_policy, safeguards=g), mini_catalogue, pseudonymizer) as r:
        yield r


@contextlib.asynccontextmanager
async def _rig(policy: Policy, mini_catalogue: Catalogue, pseudonymizer: Pseudonymizer) -> AsyncIterator[Rig]:
    mini_policy = policy
    recognizer = ScriptedRecognizer([Recognition("attestation_droits", 0.92, "releve_remboursements")])
    prompt = speak("dites la raison de votre appel en quelques mots", "fr+f2")
    cfg = SpeechConfig(no_input_ms=1500, endpointer=EndpointerConfig(hangover_ms=500))
    results: list[CallResult] = []
    async with fake_pbx() as (pbx, ami):
        speech = SpeechCapture(
            LegRegistry(ami), PortPool(32000, 32100), recognizer, cfg, prompt=prompt, reprompt=prompt
        )
        async with agi_server(mini_flow(mini_policy, mini_catalogue, pseudonymizer, speech, results.append)) as port:
            yield Rig(port, pbx, ami, speech, recognizer, results)


async def test_spoken_motive_routes_the_call(rig: Rig) -> None:
    utterance = speak(SENTENCE)
    rig.pbx.rounds = [CallerScript(audio=np.concatenate([utterance, silence(1500)]), start_after_s=0.8)]
    ch = await rig.call()
    assert (ch.variables["ROUTER_MOTIVE"], ch.variables["ROUTER_ACTION"]) == ("attestation_droits", "deflect")
    assert [c.split(" ", 2)[1] for c in ch.commands[:1]] == ['"Dial"']
    assert rig.pbx.hangups == rig.pbx.legs  # the router ended the leg over AMI
    r = rig.results[-1]
    assert r.motive is not None and (r.motive.method, r.motive.confidence) == ("speech", 0.92)
    assert r.motive.runner_up == "releve_remboursements"
    assert r.speech_to_route_s is not None and r.speech_to_route_s < 1.0  # the 100 ms budget: see README figures
    outcome = rig.speech.rounds[-1]
    assert outcome.barged_in and 0 < rig.pbx.prompt_packets[0] < 130  # the prompt stopped at the first words
    start, end = speech_bounds_ms(utterance)
    heard_ms, spoken_ms = len(rig.recognizer.heard[0]) / 8, end - start
    ep = rig.speech.config.endpointer
    # nothing cut; at most the pre-roll and tail kept, plus what a loaded machine turns into silence frames
    # (a packet > 120 ms late counts as a gap), never the 1.5 s of trailing silence
    assert spoken_ms - 100 <= heard_ms <= spoken_ms + ep.pre_roll_ms + ep.tail_ms + 400, (spoken_ms, heard_ms)
    assert rig.recognizer.calls == 1  # the speculative recognition was used


async def test_a_leg_port_announced_late_still_gets_the_question_played(rig: Rig) -> None:
    """Found at 10 calls/s through a real Asterisk (benchmarks/bench_speech_load.py): AMI's VarSet of the leg's
    port came later than the 1 s wait, and the caller got no question at all, only silence. Now the prompt
    starts when the port comes, and the caller is heard as before."""
    utterance = speak(SENTENCE)
    late = rig.speech.config.peer_timeout + 0.5
    rig.pbx.rounds = [CallerScript(audio=np.concatenate([utterance, silence(1500)]), start_after_s=1.5,
                                   varset_after_s=late)]  # fmt: skip
    ch = await rig.call()
    assert (ch.variables["ROUTER_MOTIVE"], ch.variables["ROUTER_ACTION"]) == ("attestation_droits", "deflect")
    assert rig.pbx.prompt_packets[0] > 20  # the question was played (from the late port), then barged in
    assert rig.speech.rounds[-1].barged_in


async def test_not_understood_then_understood(rig: Rig) -> None:
    rig.recognizer.answers = [Recognition(None, 0.2), Recognition("carte_vitale_perdue", 0.8)]
    utterance = np.concatenate([speak("euh c'est pour le truc là"), silence(1200)])
    rig.pbx.rounds = [CallerScript(audio=utterance), CallerScript(audio=utterance)]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "carte_vitale_perdue"
    assert len(rig.pbx.legs) == 2


async def test_no_input_twice_then_dtmf_menu_then_human(rig: Rig) -> None:
    rig.pbx.rounds = [CallerScript(), CallerScript()]
    ch = await rig.call()
    assert len(rig.pbx.legs) == 2 and all(o.no_input for o in rig.speech.rounds[-2:])
    assert any(c.startswith('GET DATA "router/menu-skills"') for c in ch.commands)
    assert (ch.variables["ROUTER_QUEUE"], ch.variables["ROUTER_RULE"]) == ("accueil", "motive.none")


async def test_safeguard_two_failed_captures_reach_a_person_without_the_menu(safe_rig: Rig) -> None:
    rig = safe_rig
    rig.recognizer.answers = [Recognition(None, 0.2)]
    rig.pbx.rounds = [CallerScript(), CallerScript(audio=np.concatenate([speak("euh le truc"), silence(1200)]))]
    ch = await rig.call()
    assert len(rig.pbx.legs) == 2  # silence, then a sentence not understood
    assert not any("router/menu-skills" in c for c in ch.commands)  # no DTMF menu as a third test
    assert (ch.variables["ROUTER_QUEUE"], ch.variables["ROUTER_RULE"]) == ("accueil", "safeguard.failed_capture")
    r = rig.results[-1]
    assert r.motive is not None and r.motive.failed_captures == 2
    assert r.cohorts == ("capture_failed",)  # what the live exclusion metrics count it in


async def test_safeguard_a_caller_heard_in_another_language_is_not_deflected(safe_rig: Rig) -> None:
    rig = safe_rig
    utterance = np.concatenate([speak(SENTENCE), silence(1500)])
    rig.recognizer.answers = [Recognition("attestation_droits", 0.92, language="en")]
    rig.pbx.rounds = [CallerScript(audio=utterance)]
    ch = await rig.call()
    assert (ch.variables["ROUTER_ACTION"], ch.variables["ROUTER_RULE"]) == ("queue", "safeguard.other_language")
    rig.recognizer.answers = [Recognition("attestation_droits", 0.92, language="fr")]
    rig.pbx.rounds = [CallerScript(audio=utterance)]
    ch = await rig.call(uniqueid="2", callerid="0698765432")
    assert ch.variables["ROUTER_ACTION"] == "deflect"  # heard in French: the 2024 rule applies
    assert [r.motive.language for r in rig.results if r.motive] == ["en", "fr"]
    assert [r.cohorts for r in rig.results] == [("other_language",), ()]


async def test_dtmf_during_capture_goes_to_the_menu_with_the_digit(rig: Rig) -> None:
    rig.pbx.rounds = [CallerScript(dtmf="3", start_after_s=0.5)]
    ch = await rig.call(dtmf=["1"])  # the second level of the menu is answered by GET DATA
    assert not any('"router/menu-skills"' in c for c in ch.commands)  # the 3 was not asked again
    assert any('"router/menu-skill-droits"' in c for c in ch.commands)
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"


async def test_loss_reordering_and_garbage_on_the_leg(rig: Rig) -> None:
    utterance = np.concatenate([speak(SENTENCE), silence(1500)])
    n = len(utterance) // 160
    rig.pbx.rounds = [CallerScript(audio=utterance, drop=set(range(20, n, 17)), swap={30, 60}, garbage_every=10)]
    ch = await rig.call()
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
    st = rig.speech.rounds[-1].stats
    assert int(str(st["lost"])) >= 2 and int(str(st["garbage"])) >= 5


async def test_caller_hangs_up_during_capture(rig: Rig) -> None:
    # they hang up mid-sentence (the last packet they send is voiced), so end of speech cannot be declared
    # before the hang-up: that needs a 500 ms voiceless hangover. (Hanging up 0.2 s after a short "allô"
    # raced the hangover and was lost on a loaded CI machine.)
    pcm = speak(SENTENCE)
    start, end = speech_bounds_ms(pcm)
    cut = int((start + end) / 2 * 8)
    assert start < end and np.abs(pcm[cut - 160 : cut].astype(np.int32)).max() > 1000  # still speaking at the cut
    rig.pbx.rounds = [CallerScript(audio=pcm[:cut], hang_up_after_s=0.0)]
    ch = await rig.call()
    assert "ROUTER_DONE" not in ch.variables
    assert rig.results[-1].hung_up


async def test_ami_down_skips_speech(rig: Rig) -> None:
    await rig.ami.close()
    ch = await rig.call(dtmf=["3", "1"])
    assert rig.pbx.legs == []
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"  # by the DTMF menu


async def test_speech_metrics_from_real_rtp_legs(rig: Rig) -> None:
    """What ops see of live audio: rounds by outcome, recognition and end-of-speech timings, RTP
    packets and loss, VAD frames; the legs' ports are back in the pool afterwards."""
    from agi_router.metrics import RouterMetrics

    metrics = RouterMetrics()
    metrics.sources.speech = rig.speech
    utterance = np.concatenate([speak(SENTENCE), silence(1500)])
    n = len(utterance) // 160
    rig.pbx.rounds = [CallerScript(audio=utterance, drop=set(range(20, n, 17)), garbage_every=10)]
    await rig.call()
    rig.pbx.rounds = [CallerScript(), CallerScript()]
    await rig.call(uniqueid="2")
    for r in rig.results:
        metrics.observe_call(r)

    def get(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert get("agi_router_speech_rounds_total", outcome="recognised") == 1
    assert get("agi_router_speech_rounds_total", outcome="no_input") == 2
    assert get("agi_router_dtmf_fallbacks_total") == 1
    assert get("agi_router_recognition_seconds_count") == 1
    assert 0.04 <= get("agi_router_recognition_seconds_sum") < 1.0  # the stand-in takes 50 ms
    # end of speech is declared one hangover (500 ms) after the last voiced frame, plus the lag
    assert 0.45 <= get("agi_router_end_of_speech_delay_seconds_sum") < 0.9
    packets_in = get("agi_router_rtp_packets_total", direction="in")
    assert packets_in > 60  # the capture stops at end of speech, before the caller's trailing silence
    assert get("agi_router_rtp_packets_total", direction="out") > 0  # the prompt, until barge-in
    assert get("agi_router_rtp_lost_packets_total") >= 2
    assert get("agi_router_rtp_dropped_packets_total", reason="garbage") >= 5
    assert packets_in * 0.9 <= get("agi_router_vad_frames_total") <= packets_in  # a frame per packet played out
    assert 0 < get("agi_router_vad_voiced_frames_total") < get("agi_router_vad_frames_total")
    assert get("agi_router_media_streams_active") == 0 and get("agi_router_rtp_ports_in_use") == 0
    assert get("agi_router_rtp_jitter_seconds_count") >= 1


async def test_recogniser_fault_sends_the_caller_to_the_dtmf_menu(rig: Rig) -> None:
    class Broken:
        async def recognize(self, pcm: np.ndarray) -> Recognition:
            raise RuntimeError("model worker died")

    rig.speech.recognizer = Broken()
    rig.pbx.rounds = [CallerScript(audio=np.concatenate([speak(SENTENCE), silence(1500)]))]
    ch = await rig.call(dtmf=["3", "1"])
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"  # by the DTMF menu, no second round
    assert len(rig.pbx.legs) == 1 and rig.speech.totals.recognizer_errors == 1
    assert [r.outcome for r in rig.results[-1].speech_rounds] == ["error"]


async def test_a_hanging_recogniser_holds_the_caller_no_longer_than_its_timeout(rig: Rig) -> None:
    """A recogniser that never answers (a wedged worker): the caller, waiting in silence after speaking, gets
    the DTMF menu ``recognition_timeout_s`` after the end of speech, counted as a recogniser error."""
    import dataclasses

    class Hung:
        async def recognize(self, pcm: np.ndarray) -> Recognition:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    rig.speech.recognizer = Hung()
    rig.speech.config = dataclasses.replace(rig.speech.config, recognition_timeout_s=1.0)
    rig.pbx.rounds = [CallerScript(audio=np.concatenate([speak(SENTENCE), silence(1500)]))]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    ch = await asyncio.wait_for(rig.call(dtmf=["3", "1"]), 60)
    assert ch.variables["ROUTER_MOTIVE"] == "attestation_droits"  # by the DTMF menu
    assert rig.speech.totals.recognizer_errors == 1
    assert [r.outcome for r in rig.results[-1].speech_rounds] == ["error"]
    assert loop.time() - t0 < 30


async def test_a_saturated_recogniser_sends_callers_to_the_menu_at_once(rig: Rig) -> None:
    """Admission: when recognition would take longer than the budget, no round starts (no leg, no prompt):
    the caller gets the DTMF menu now instead of waiting behind everyone else."""
    from agi_router.speech.capacity import RecognizerLoad

    load = RecognizerLoad(1, inflight=6, decode_s=0.4)  # a new utterance: 7 decodes of 0.4 s ahead
    rig.recognizer.expected_s = load.expected_s  # type: ignore[attr-defined]
    ch = await rig.call(dtmf=["3", "1"])
    assert rig.pbx.legs == [] and ch.variables["ROUTER_MOTIVE"] == "attestation_droits"  # by the menu
    assert [r.outcome for r in rig.results[-1].speech_rounds] == ["overload"]
    assert rig.speech.totals.admission_refused == 1
    load.inflight = 2  # 1.2 s: within the 1.5 s default
    rig.pbx.rounds = [CallerScript(audio=np.concatenate([speak(SENTENCE), silence(1500)]))]
    ch = await rig.call(uniqueid="2")
    assert len(rig.pbx.legs) == 1 and ch.variables["ROUTER_MOTIVE"] == "attestation_droits"


async def test_an_idle_recogniser_is_never_refused_whatever_its_average_says(rig: Rig) -> None:
    """Found at 10 calls/s through a real Asterisk: after a burst the decode-time average stayed at 1.51 s (over
    the 1.5 s budget) with nothing in flight, and since only decodes update it, every later caller was sent to
    the DTMF menu for good. Nothing waiting: the round starts (and its decode refreshes the average)."""
    from agi_router.speech.capacity import RecognizerLoad

    load = RecognizerLoad(2, inflight=0, decode_s=1.6)
    rig.recognizer.expected_s = load.expected_s  # type: ignore[attr-defined]
    rig.recognizer.busy = lambda: load.inflight > 0  # type: ignore[attr-defined]
    rig.pbx.rounds = [CallerScript(audio=np.concatenate([speak(SENTENCE), silence(1500)]))]
    ch = await rig.call()
    assert len(rig.pbx.legs) == 1 and ch.variables["ROUTER_MOTIVE"] == "attestation_droits"
    assert rig.speech.totals.admission_refused == 0
    load.inflight = 1  # one waiting and 2 x 1.6 s ahead of the next: refused, as before
    ch = await rig.call(uniqueid="2", dtmf=["3", "1"])
    assert rig.speech.totals.admission_refused == 1 and len(rig.pbx.legs) == 1


def test_recognizer_load_estimate() -> None:
    from agi_router.speech.capacity import RecognizerLoad

    load = RecognizerLoad(2, decode_s=0.3)
    assert load.expected_s() == pytest.approx(0.3)  # idle: its own decode
    for _ in range(3):
        load.begin()
    assert load.expected_s() == pytest.approx(0.6)  # 3 in flight on 2 decoders: one round ahead
    load.end(0.5)
    assert load.inflight == 2 and load.decode_s == pytest.approx(0.34) and load.busy_s == 0.5
    load.end(None)  # a failed decode: no time recorded
    assert load.inflight == 1 and load.decoded == 1
