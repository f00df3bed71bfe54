"""Motive capture on live audio: the caller says why they call, in their own words.

One round, as measured on Asterisk 22 (team notes):

1. bind an RTP port, ``EXEC Dial UnicastRTP/<router>:<port>/c(ulaw),,gL(<max ms>)``: Asterisk bridges
   the caller to a chan_rtp leg that sends the caller's audio to the router (``g``: the AGI goes on
   after the leg; ``L()``: the leg ends by itself if the router dies);
2. AMI ``VarSet UNICASTRTP_LOCAL_PORT`` tells where to send the prompt; once ``BridgeEnter``, the
   prompt is streamed from the same socket, paced at 20 ms, and stopped at the caller's first
   words (barge-in);
3. webrtcvad endpoints the sentence; at the first pause the recogniser starts speculatively, so
   that at end of speech (hangover) the motive is usually already known;
4. AMI ``Hangup`` of the leg: Dial returns (~3.5 ms) and the AGI conversation continues.

The leg is on a lease: as soon as AMI names it, the router sets ``TIMEOUT(absolute)`` on it (AMI
``Setvar``) to ``lease_s`` and renews it every ``lease_s / 4``. A router that dies (or loses AMI)
stops renewing, the leg hangs itself up within ``lease_s``, Dial returns, the AGI socket is found
closed and the dialplan takes its human route: the caller hears at most ``lease_s`` of silence
(Dial's own ``L()`` only covers the ~2 ms before the leg has a name).

No input or not understood -> re-prompt (``attempts``), if it fits in the fallback budget (see
``capture.py``); out of scope (the understander's ``out_of_scope`` level: nothing this line handles) -> the
caller hears what the line is for and is asked once more (even after the last attempt), and a second
out-of-scope answer goes to a person; the human digit (``0``) typed or a request for a person said -> a person; another
digit (AMI ``DTMFEnd``) -> the DTMF menu, with the digit already typed; AMI down, no free port,
anything odd -> ``None`` and the next capture source (the DTMF menu) runs. A caller is never left
in silence by this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from ..agi.session import AGISession
from ..exceptions import AGIError, MediaError, RecognitionError
from ..media.rtp import PortPool, RtpFrame, RtpStats, RtpStream, open_rtp_stream
from ..policy.model import MotiveFacts
from ..speech.endpointer import (
    Endpointer,
    EndpointerConfig,
    MaxLength,
    NoInput,
    SpeechEnd,
    SpeechEvent,
    SpeechPause,
    SpeechResumed,
    SpeechStart,
)
from ..speech.turn import judge_turn
from .capture import CallContext, SpeechRound
from .legs import LegRegistry, LegWatch

if TYPE_CHECKING:
    from ..motives.understanding import Understanding
    from ..speech.sampling import Sampler

__all__ = ["MediaTotals", "MotiveRecognizer", "Recognition", "RoundOutcome", "SpeechCapture", "SpeechConfig"]

log = logging.getLogger(__name__)

Pcm = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Recognition:
    motive_id: str | None  # None: not understood (rejected), or to be confirmed (see ``understanding``)
    confidence: float = 0.0
    runner_up: str | None = None
    transcript: str = ""
    human_requested: bool = False
    understanding: Understanding | None = None  # the understander's full answer (levels, parts)
    reply: str = ""  # confirmation turn: "yes" | "no" | "person" | "" (not understood)
    language: str = ""  # the language the recogniser heard (ISO 639-1), "" when it does not say

    @classmethod
    def of(cls, u: Understanding, language: str = "") -> Recognition:
        facts = u.facts()
        return cls(
            facts.motive_id if facts is not None else None,
            u.confidence,
            u.runner_up,
            u.text,
            human_requested=u.person,
            understanding=u,
            language=language,
        )

    def facts(self) -> MotiveFacts:
        """What the policy is given for an accepted recognition."""
        if self.understanding is not None:
            f = self.understanding.facts()
            if f is not None:
                return f
        return MotiveFacts(self.motive_id, self.confidence, "speech", self.runner_up, self.human_requested)


class MotiveRecognizer(Protocol):
    async def recognize(self, pcm: Pcm) -> Recognition: ...

    async def reply(self, pcm: Pcm) -> Recognition:
        """The confirmation turn: the transcript read as yes / no / a person (``Recognition.reply``)."""
        ...


@dataclass(frozen=True, slots=True)
class SpeechConfig:
    bind_host: str = "127.0.0.1"  # where the router's RTP sockets listen
    advertise_host: str = "127.0.0.1"  # the router's address as Asterisk must send to it
    asterisk_host: str = "127.0.0.1"  # where Asterisk's RTP comes from
    attempts: int = 2
    leg_margin_ms: int = 3000  # Dial L() = the round's longest possible length + this (backstop only)
    lease_s: float = 2.0  # the leg hangs itself up this long after the router's last renewal
    peer_timeout: float = 1.0  # wait for UNICASTRTP_LOCAL_PORT (and the bridge) before listening
    late_peer_s: float = 3.0  # then the prompt still starts if the port comes this much later (a loaded PBX)
    no_input_ms: int = 5000  # after the prompt
    human_digit: str = "0"  # typed during capture: a person at once
    fallback_budget_s: float = 36.0  # end of the first sentence not understood -> in a queue
    jitter_packets: int = 0  # 0 on loopback; 8 or 16 across a network
    endpointer: EndpointerConfig = field(default_factory=EndpointerConfig)
    prompt_file: str = "router/ask-motive"  # STREAM FILE fallback when no PCM is loaded
    reprompt_file: str = "router/not-understood"
    out_of_scope_file: str = "router/out-of-scope"  # what the line is for, then asked once more
    confirm: bool = True  # a plausible but unsure motive: "Vous appelez pour X ?" instead of re-asking
    confirm_attempts: int = 2  # the question, then once more after silence or an answer not understood
    confirm_no_input_ms: int = 3000  # after the question
    admit_wait_s: float = 1.5  # a round starts only if the recogniser would answer a new utterance within this
    recognition_timeout_s: float = 5.0  # a recogniser that hangs: the caller gets the DTMF menu after this
    # end of turn (speech/turn.py): "semantic" ends at a pause when the words so far are a complete answer and
    # waits extend_ms more after a connective or a hesitation; "silence" waits the hangover, always
    turn: str = "silence"  # not yet the default: see the README's turn-taking figures
    turn_extend_ms: int = 400
    turn_min_confidence: float = 0.0  # of what the router would act on (the understander's own thresholds hold)


@dataclass(slots=True)
class RoundOutcome:
    mode: str = "motive"  # motive | confirm
    recognition: Recognition | None = None
    digits: str = ""
    no_input: bool = False
    speech_end_at: float | None = None  # time.monotonic() of the end of speech
    max_length: bool = False
    frames: int = 0
    barged_in: bool = False
    recognition_s: float | None = None  # run time of the recognition whose result was used
    audio: Pcm | None = None  # the utterance that recognition was run on (for opt-in sampling only)
    endpoint_delay_s: float | None = None  # end of the last voiced frame -> SpeechEnd handled
    jitter_s: float | None = None  # the leg's interarrival jitter when it closed (None: no packet)
    turn: str = ""  # how the turn ended: silence | complete (early, speech/turn.py); extended: +connective...
    extended: str = ""  # why the hangover was lengthened (connective | hesitation), if it was
    stats: dict[str, object] = field(default_factory=dict)

    def summary(self) -> SpeechRound:
        r = self.recognition
        if self.digits:
            kind = "dtmf"
        elif self.no_input:
            kind = "no_input"
        elif r is not None and r.human_requested:
            kind = "human_request"
        elif self.mode == "confirm":
            kind = f"confirm_{r.reply}" if r is not None and r.reply in ("yes", "no") else "no_match"
        elif r is not None and r.understanding is not None and r.understanding.level == "confirm":
            kind = "to_confirm"
        elif r is not None and r.understanding is not None and r.understanding.level == "out_of_scope":
            kind = "out_of_scope"
        elif r is not None and r.motive_id:
            kind = "recognised"
        elif r is not None:
            kind = "no_match"
        else:
            kind = "max_length" if self.max_length else "no_input"
        return SpeechRound(
            kind,
            r.confidence if r is not None else None,
            self.recognition_s,
            self.endpoint_delay_s,
            self.barged_in,
            self.jitter_s,
        )


@dataclass(slots=True)
class MediaTotals:
    """Counters over every capture leg since start: closed legs are folded into ``rtp``; the
    legs in progress are in ``SpeechCapture.streams`` (metrics add both at scrape time)."""

    rtp: RtpStats = field(default_factory=RtpStats)
    vad_frames: int = 0
    vad_voiced_frames: int = 0
    rounds: int = 0
    recognizer_errors: int = 0
    admission_refused: int = 0  # rounds not started: the recogniser was saturated (DTMF menu instead)


class SpeechCapture:
    def __init__(
        self,
        legs: LegRegistry,
        ports: PortPool,
        recognizer: MotiveRecognizer,
        config: SpeechConfig | None = None,
        *,
        prompt: Pcm | None = None,
        reprompt: Pcm | None = None,
        confirm_prompt: Callable[[str], Pcm | None] | None = None,
        sampler: Sampler | None = None,
        out_of_scope: Pcm | None = None,
    ) -> None:
        self.legs = legs
        self.ports = ports
        self.recognizer = recognizer
        self.config = config or SpeechConfig()
        self.prompt = prompt
        self.reprompt = reprompt
        self.out_of_scope = out_of_scope  # "Ce service répond aux questions sur l'assurance maladie : ..."
        #: motive id -> "Vous appelez pour X ? ..." as 8 kHz PCM, or None (no question for it: re-ask)
        self.confirm_prompt = confirm_prompt or (lambda _motive: None)
        self.sampler = sampler
        self.rounds: list[RoundOutcome] = []  # last rounds, for tests and logs
        self.streams: set[RtpStream] = set()  # capture legs in progress
        self.totals = MediaTotals()

    async def capture(self, session: AGISession, call: CallContext) -> MotiveFacts | None:
        cfg = self.config
        if self.sampler is not None and call.sample is None:
            call.sample = await self.sampler.decide(session)
        attempts = cfg.attempts
        out_of_scope = 0  # answers about nothing this line handles
        last_out_of_scope = False
        attempt = 0
        while attempt < attempts:
            if not self.legs.available:
                log.info("speech capture skipped for %s: AMI not connected", call.call_id)
                return None
            told = last_out_of_scope  # the last answer was out of scope: say what the line is for
            if attempt > 0 and not call.fits(self._round_min_s(reprompt=True, out_of_scope=told)):
                log.info("no re-prompt for %s: it would overrun the time to a person", call.call_id)
                return None
            if not self._admitted(call):
                return None
            try:
                outcome = await self._round(session, call, reprompt=attempt > 0, out_of_scope=told)
            except MediaError as exc:
                log.warning("speech capture unavailable for %s: %s", call.call_id, exc)
                return None
            except RecognitionError as exc:
                self.totals.recognizer_errors += 1
                call.speech_rounds.append(SpeechRound("error"))
                log.error("recogniser failed for %s, DTMF menu instead: %r", call.call_id, exc.__cause__)
                return None
            self._done(call, outcome)
            if outcome.digits:
                if outcome.digits[0] == cfg.human_digit:
                    return MotiveFacts(None, 1.0, "dtmf", human_requested=True)
                call.pending_digits = outcome.digits
                return None
            r = outcome.recognition
            if r is not None and r.language:
                call.heard_language = r.language
            if r is not None and (r.motive_id or r.human_requested):
                call.ended_speaking(outcome.speech_end_at, outcome.endpoint_delay_s)
                return r.facts()
            # not understood, or nothing said: the clock to a person starts at the end of that sentence
            call.start_fallback(cfg.fallback_budget_s, outcome.speech_end_at)
            u = r.understanding if r is not None else None
            attempt += 1
            last_out_of_scope = u is not None and u.level == "out_of_scope"
            if last_out_of_scope:
                out_of_scope += 1
                if out_of_scope >= 2:  # twice about something else: a person explains, never a hang-up
                    log.info("%s out of scope twice: a person", call.call_id)
                    call.failed()
                    call.ended_speaking(outcome.speech_end_at, outcome.endpoint_delay_s)
                    heard = u.best if u is not None else None
                    return MotiveFacts(None, 0.0, "speech", heard=heard, level="out_of_scope")
                attempts = max(attempts, attempt + 1)  # told what the line is for, then asked once more
            if u is not None and u.level == "confirm" and u.motive_id and cfg.confirm:
                try:
                    confirmed = await self._confirm(session, call, u)
                except MediaError as exc:
                    log.warning("confirmation unavailable for %s: %s", call.call_id, exc)
                    return None
                if confirmed is not None or call.pending_digits:
                    return confirmed
            if call.failed():  # the policy's safeguard: no re-prompt, no menu, a person now
                log.info("%s not understood %d times: a person", call.call_id, call.failed_captures)
                return MotiveFacts(None, 0.0, "speech")
        return None

    async def _confirm(self, session: AGISession, call: CallContext, u: Understanding) -> MotiveFacts | None:
        """ "Vous appelez pour X ? Dites oui ou non, ou tapez 1 ou 2." Yes: X, confirmed (confidence 1);
        a person asked for: a person; no: ``None`` (asked again, or the menu); silence or an answer not
        understood: the question once more, if it fits in the time to a person."""
        cfg = self.config
        assert u.motive_id is not None
        question = self.confirm_prompt(u.motive_id)
        if question is None:
            return None
        step = len(question) / 8000 + cfg.confirm_no_input_ms / 1000
        for _ in range(cfg.confirm_attempts):
            if not self.legs.available or not call.fits(step) or not self._admitted(call):
                return None
            try:
                outcome = await self._round(session, call, question=question)
            except RecognitionError as exc:
                self.totals.recognizer_errors += 1
                call.speech_rounds.append(SpeechRound("error"))
                log.error("recogniser failed for %s during confirmation: %r", call.call_id, exc.__cause__)
                return None
            self._done(call, outcome)
            r = outcome.recognition
            if outcome.digits:
                d = outcome.digits[0]
                if d == cfg.human_digit:
                    return MotiveFacts(None, 1.0, "dtmf", human_requested=True)
                if d == "1":
                    call.speech_ended_at = time.monotonic()
                    return u.facts(confirmed=True)
                if d == "2":
                    return None
                call.pending_digits = outcome.digits  # a menu digit: the caller chose the menu
                return None
            if r is None:
                continue  # silence
            if r.human_requested:
                return MotiveFacts(None, 1.0, "speech", human_requested=True, level="person")
            if r.reply == "yes":
                call.ended_speaking(outcome.speech_end_at, outcome.endpoint_delay_s)
                return u.facts(confirmed=True)
            if r.reply == "no":
                return None
        return None

    def _admitted(self, call: CallContext) -> bool:
        """Admission: a round starts only if the recogniser would answer within ``admit_wait_s``; otherwise
        the caller goes to the DTMF menu now rather than everyone waiting on a saturated recogniser."""
        expected = getattr(self.recognizer, "expected_s", None)
        if expected is None:
            return True
        busy = getattr(self.recognizer, "busy", None)
        if busy is not None and not busy():
            # nothing waits: refusing would only lock speech out, since the decode-time average that says
            # "too slow" is updated by decodes (found at 10 calls/s: after the burst, every caller was refused
            # for good with nothing in flight, the average stuck at 1.51 s against the 1.5 s budget)
            return True
        wait = float(expected())
        if wait <= self.config.admit_wait_s:
            return True
        self.totals.admission_refused += 1
        call.speech_rounds.append(SpeechRound("overload"))
        log.warning("recogniser saturated (%.1f s expected): %s gets the DTMF menu", wait, call.call_id)
        return False

    def _done(self, call: CallContext, outcome: RoundOutcome) -> None:
        self.rounds.append(outcome)
        del self.rounds[:-100]
        call.speech_rounds.append(outcome.summary())
        r = outcome.recognition
        if r is not None and outcome.mode == "motive" and r.transcript:
            call.transcript = r.transcript
        if call.sample and self.sampler is not None and outcome.audio is not None and r is not None:
            u = r.understanding
            understood = u.as_json() if u is not None else {"reply": r.reply} if outcome.mode == "confirm" else {}
            sid = self.sampler.keep(outcome.audio, mode=outcome.mode, transcript=r.transcript, understood=understood)
            if sid is not None and outcome.mode == "motive":
                call.samples.append(sid)  # labelled by the agent's correction, if any (handoff/correction.py)
        outcome.audio = None  # not kept in memory past the round

    def _round_min_s(self, *, reprompt: bool, out_of_scope: bool = False) -> float:
        """The shortest a round can take: its prompt, then the no-input wait."""
        pcm = self.out_of_scope if out_of_scope else self.reprompt if reprompt else self.prompt
        return (len(pcm) / 8000 if pcm is not None else 5.0) + self.config.no_input_ms / 1000

    # -- one round ----------------------------------------------------------------------------------

    async def _round(
        self,
        session: AGISession,
        call: CallContext,
        *,
        reprompt: bool = False,
        question: Pcm | None = None,
        out_of_scope: bool = False,
    ) -> RoundOutcome:
        cfg = self.config
        if question is not None:
            prompt: Pcm | None = question
        elif out_of_scope:
            prompt = self.out_of_scope
        else:
            prompt = self.reprompt if reprompt else self.prompt
        no_input_ms = cfg.confirm_no_input_ms if question is not None else cfg.no_input_ms
        if prompt is None:
            # no PCM to stream: play it the classic way first (no barge-in then)
            fallback = cfg.out_of_scope_file if out_of_scope else cfg.reprompt_file if reprompt else cfg.prompt_file
            await session.stream_file(fallback)
        stream = await open_rtp_stream(
            self.ports,
            cfg.bind_host,
            expected_host=cfg.asterisk_host,
            jitter_packets=cfg.jitter_packets,
            frame_ms=cfg.endpointer.frame_ms,  # the endpointer takes frames of exactly this length
        )
        self.streams.add(stream)
        watch = self.legs.watch(stream.local_port, session.env.channel)
        prompt_ms = len(prompt) / 8 if prompt is not None else 0.0
        leg_max_ms = int(prompt_ms + no_input_ms + cfg.endpointer.max_utterance_ms + cfg.leg_margin_ms)
        dial = f"UnicastRTP/{cfg.advertise_host}:{stream.local_port}/c(ulaw),,gL({leg_max_ms})"
        exec_task = asyncio.create_task(session.exec("Dial", dial, timeout=leg_max_ms / 1000 + 5))
        lease_task = asyncio.create_task(self.legs.keep_alive(watch, cfg.lease_s))
        barge = asyncio.Event()
        play_task: asyncio.Task[bool] | None = None
        outcome = RoundOutcome(mode="confirm" if question is not None else "motive")
        try:
            try:
                async with asyncio.timeout(cfg.peer_timeout):
                    port = await asyncio.shield(watch.asterisk_port)
                stream.peer = (cfg.asterisk_host, port)
            except TimeoutError:  # a loaded PBX: the prompt starts when the port comes (the caller never waits
                # in silence for a question that was dropped), and the wait for an answer makes room for it
                log.warning("no UNICASTRTP_LOCAL_PORT for %s within %.1f s: the prompt starts when it comes",
                            call.call_id, cfg.peer_timeout)  # fmt: skip
                prompt_ms += cfg.late_peer_s * 1000 if prompt is not None else 0.0
            if prompt is not None:
                play_task = asyncio.create_task(self._play(stream, watch, prompt, barge))
            else:
                prompt_ms = 0.0
            ep_cfg = cfg.endpointer
            ep = Endpointer(EndpointerConfig(**{**_fields(ep_cfg), "no_input_ms": int(prompt_ms) + no_input_ms}))
            try:
                await self._listen(stream, watch, ep, exec_task, barge, outcome)
            finally:
                self.totals.vad_frames += ep.frames_seen
                self.totals.vad_voiced_frames += ep.voiced_frames
        finally:
            barge.set()
            lease_task.cancel()
            if play_task is not None:
                play_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await play_task
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await lease_task
            try:
                await self._end_leg(watch, exec_task)  # raises AGIHangup if the caller hung up
            finally:
                stream.close()
                self.legs.forget(watch)
                self.streams.discard(stream)
                st = stream.stats
                self.totals.rtp.accumulate(st)
                self.totals.rounds += 1
                if st.packets:
                    outcome.jitter_s = st.jitter_ms / 1000
                outcome.stats = {
                    "packets": st.packets,
                    "lost": st.lost,
                    "garbage": st.garbage,
                    "late": st.late,
                    "jitter_ms": round(st.jitter_ms, 2),
                    "sent": st.sent,
                }
        return outcome

    async def _play(self, stream: RtpStream, watch: LegWatch, pcm: Pcm, barge: asyncio.Event) -> bool:
        if stream.peer is None:  # the port came late, or never: no prompt once the caller speaks
            try:
                async with asyncio.timeout(self.config.late_peer_s):
                    port = await asyncio.shield(watch.asterisk_port)
            except TimeoutError:
                log.warning("no UNICASTRTP_LOCAL_PORT after %.1f s more: the question is not played",
                            self.config.late_peer_s)  # fmt: skip
                return False
            if barge.is_set():
                return False
            stream.peer = (self.config.asterisk_host, port)
        # a frame sent before BridgeEnter is dropped by Asterisk (measured): wait for the bridge
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.peer_timeout):
                await watch.bridged.wait()
        return await stream.play(pcm, barge)

    async def _listen(
        self,
        stream: RtpStream,
        watch: LegWatch,
        ep: Endpointer,
        exec_task: asyncio.Task[int],
        barge: asyncio.Event,
        outcome: RoundOutcome,
    ) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        anchor: float | None = None  # wall ms of stream time 0
        speculative: asyncio.Task[Recognition] | None = None
        judged: asyncio.Task[Recognition] | None = None
        try:
            while True:
                if exec_task.done():
                    exec_task.result()  # AGIHangup if the caller hung up
                    return  # the leg ended on its own (L() limit)
                if not watch.digits.empty():
                    outcome.digits = "".join(watch.digits.get_nowait() for _ in range(watch.digits.qsize()))
                    return
                frame: RtpFrame | None = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.04):
                        frame = await stream.frames.get()
                now_ms = (loop.time() - t0) * 1000
                if frame is not None:
                    if anchor is None:
                        anchor = (frame.arrival - t0) * 1000 - frame.stream_ms
                    outcome.frames += 1
                    events = ep.feed(frame.pcm, anchor + frame.stream_ms)
                else:
                    events = ep.tick(now_ms)
                if speculative is not None and speculative is not judged and speculative.done():
                    judged = speculative  # one look per speculative transcript
                    early = self._judge_turn(ep, speculative, outcome)
                    if early is not None:
                        events.append(early)
                for ev in events:
                    if isinstance(ev, SpeechEnd):  # the endpointer's clock is ms since t0
                        outcome.endpoint_delay_s = max(0.0, loop.time() - t0 - ev.end_ms / 1000)
                        outcome.turn = outcome.turn or "silence"
                    result = await self._on_event(ev, barge, outcome, speculative)
                    if isinstance(result, asyncio.Task):
                        speculative = result
                    elif result == "resumed":
                        speculative = None
                    elif result == "done":
                        return
        finally:
            if speculative is not None and not speculative.done():
                speculative.cancel()

    def _judge_turn(
        self, ep: Endpointer, speculative: asyncio.Task[Recognition], outcome: RoundOutcome
    ) -> SpeechEnd | None:
        """The speculative transcript is in and the caller is still silent: end the turn now if it is a
        complete answer, or lengthen this pause if the caller stopped mid-sentence (speech/turn.py)."""
        if self.config.turn != "semantic" or not ep.paused or speculative.cancelled():
            return None
        if speculative.exception() is not None:
            return None  # the recogniser failed: SpeechEnd will run it again and report the failure
        r = speculative.result()
        u = r.understanding
        decision = judge_turn(
            r.transcript,
            u.level.value if u is not None else None,
            r.confidence,
            min_confidence=self.config.turn_min_confidence,
            reply=r.reply or ("person" if r.human_requested else ""),
        )
        if decision.action == "extend":
            outcome.extended = decision.reason
            ep.extend(self.config.turn_extend_ms)
        elif decision.action == "end":
            end = ep.end_now()
            if end is not None:
                outcome.turn = "complete"
            return end
        return None

    async def _on_event(
        self,
        ev: SpeechEvent,
        barge: asyncio.Event,
        outcome: RoundOutcome,
        speculative: asyncio.Task[Recognition] | None,
    ) -> asyncio.Task[Recognition] | str | None:
        if isinstance(ev, SpeechStart):
            if not barge.is_set():
                outcome.barged_in = True
            barge.set()
        elif isinstance(ev, SpeechPause):
            return asyncio.create_task(self._recognize(ev.audio, outcome))
        elif isinstance(ev, SpeechResumed):
            if speculative is not None:
                speculative.cancel()
            return "resumed"
        elif isinstance(ev, SpeechEnd | MaxLength):
            outcome.speech_end_at = time.monotonic()
            outcome.max_length = isinstance(ev, MaxLength)
            limit = self.config.recognition_timeout_s
            try:  # the caller is waiting in silence from here: a recogniser that hangs must not hold them
                async with asyncio.timeout(limit):
                    if isinstance(ev, SpeechEnd) and speculative is not None:
                        outcome.recognition = await speculative
                    else:
                        if speculative is not None:
                            speculative.cancel()
                        outcome.recognition = await self._recognize(ev.audio, outcome)
            except TimeoutError as exc:
                if speculative is not None:
                    speculative.cancel()
                raise RecognitionError(f"no transcript {limit:g} s after the end of speech") from exc
            return "done"
        elif isinstance(ev, NoInput):
            outcome.no_input = True
            return "done"
        return None

    async def _recognize(self, pcm: Pcm, outcome: RoundOutcome) -> Recognition:
        t = time.perf_counter()
        try:
            if outcome.mode == "confirm":
                r = await self.recognizer.reply(pcm)
            else:
                r = await self.recognizer.recognize(pcm)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise RecognitionError(f"recogniser failed on {len(pcm) / 8000:.1f} s of audio") from exc
        outcome.recognition_s = time.perf_counter() - t  # the last one run is the one used
        outcome.audio = pcm if self.sampler is not None else None
        return r

    async def _end_leg(self, watch: LegWatch, exec_task: asyncio.Task[int]) -> None:
        if not exec_task.done():
            await self.legs.hangup_leg(watch)
        try:
            async with asyncio.timeout(2.0):
                await exec_task
        except TimeoutError:
            log.warning("Dial of the capture leg did not return 2 s after its hang-up")
            exec_task.cancel()
        except AGIError:
            raise


def _fields(cfg: EndpointerConfig) -> dict[str, int]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
