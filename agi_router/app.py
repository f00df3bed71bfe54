"""Wiring: build the router's components from settings, serve, reload the policy on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import threading
import wave
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .agi.server import AGIHandler, AGIServer, AGIServerConfig
from .ami.client import AMIClient, AMIConfig
from .audit import AuditLog
from .callbacks.placer import CallbackPlacer
from .callbacks.redis_store import RedisCallbackStore
from .callbacks.store import CallbackRecords, CallbackStore
from .callflow.capture import ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture, MotiveCapture
from .callflow.flow import CallFlow, CallFlowConfig, CallResult, PolicyHolder
from .callflow.legs import LegRegistry
from .callflow.speech import SpeechCapture, SpeechConfig
from .config import Settings
from .directory.base import AccountDirectory
from .directory.http import HTTPDirectory
from .directory.sqlite import SQLiteDirectory
from .exceptions import ConfigError, DirectoryError
from .handoff import (
    AgentEvents,
    CallsAPI,
    ContextStore,
    CorrectionHandler,
    Handoff,
    HandoffConfig,
    InMemoryContextStore,
    RedisContextStore,
    TransferHandler,
)
from .listen import bind_listener
from .logs import DROPPED
from .media.rtp import PortPool
from .metrics import MetricsServer, RouterMetrics, TimedDirectory, TimedMemory, TimedSms
from .motives.catalogue import Catalogue
from .motives.understanding import Thresholds, Understander
from .policy.config import load_policy
from .policy.engine import is_open
from .policy.model import AccountFacts
from .privacy import Pseudonymizer, load_or_create_key
from .prompts import CONFIRM_PREFIX, PromptLengths
from .queues.model import QueueModel
from .queues.outcomes import OutcomeTracker
from .sip.security import SecurityEvents
from .sms import HTTPSmsGateway, NoSms, SmsSender
from .speech.endpointer import EndpointerConfig
from .speech.sampling import Sampler, SampleStore
from .state.base import CallerMemory
from .state.memory import InMemoryCallerMemory
from .state.redis import RedisCallerMemory

if TYPE_CHECKING:
    from .speech.capacity import ProcessRecognizer
    from .speech.recognizer import WhisperRecognizer

__all__ = ["NoDirectory", "Router", "build_router", "make_pseudonymizer", "run"]

log = logging.getLogger(__name__)

HOTLINE_SCRIPT = "3646"
CORRECT_SCRIPT = "correct"  # the agent's feature code (handoff/correction.py)
TRANSFER_SCRIPT = "transfer"  # the corrected caller's new leg


class NoDirectory:
    """``backend = "none"``: every caller's account status is unknown (never deflected)."""

    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        raise DirectoryError("no directory configured")

    async def close(self) -> None:
        return None


def audit_metrics(audit: AuditLog) -> Iterator[Metric]:
    """The audit trail's health: lines the disk refused (still held, written first when it takes writes
    again), failed attempts, lines dropped because too many were held."""
    p = "agi_router_audit_"
    yield GaugeMetricFamily(p + "pending_lines", "Audit lines not yet on disk (held in memory)", value=audit.pending)
    yield CounterMetricFamily(p + "write_errors", "Failed attempts to write the audit trail", value=audit.failures)
    yield CounterMetricFamily(
        p + "dropped_lines", "Audit lines lost: more were held than the limit", value=audit.dropped
    )


def make_pseudonymizer(settings: Settings) -> Pseudonymizer:
    env_key = os.environ.get("AGI_ROUTER_PSEUDONYM_KEY")
    if env_key:
        return Pseudonymizer(env_key.encode())
    return Pseudonymizer(load_or_create_key(settings.path(settings.key_file)))


@dataclass
class Router:
    settings: Settings
    catalogue: Catalogue
    policy: PolicyHolder
    server: AGIServer
    flow: CallFlow
    directory: AccountDirectory
    memory: CallerMemory
    ami: AMIClient | None = None
    speech: SpeechCapture | None = None
    callbacks: CallbackPlacer | None = None
    outcomes: OutcomeTracker | None = None
    audit: AuditLog | None = None
    metrics: RouterMetrics | None = None
    queues: QueueModel | None = None
    contexts: ContextStore | None = None
    calls_api: CallsAPI | None = None

    def health(self) -> dict[str, object]:
        """/healthz: "ok", or "degraded" (calls are routed, something is missing: AMI down...)."""
        from .ami.client import AMIState

        state: dict[str, object] = {
            "status": "ok",
            "agi_sessions_active": self.server.active,
            "policy": self.policy.current.label,
        }
        if self.ami is not None:
            state["ami"] = self.ami.state.value
            if self.ami.state is not AMIState.CONNECTED:
                state["status"] = "degraded"
        if self.queues is not None:
            state["queues_fresh"] = self.queues.synced
        return state

    def reload_policy(self) -> bool:
        """Load the policy file again; a file that fails validation never replaces the running one."""
        try:
            new = load_policy(self.settings.policy_file, catalogue=self.catalogue)
            cand_file = self.settings.candidate_policy_file
            candidate = load_policy(cand_file, catalogue=self.catalogue) if cand_file else None
        except ConfigError as exc:
            log.error("policy reload refused, keeping %s: %s", self.policy.current.label, exc)
            return False
        old = self.policy.current.label
        self.policy.replace(new, candidate)
        log.info("policy reloaded: %s -> %s", old, new.label)
        return True

    async def close(self) -> None:
        await self.server.close()
        await self.flow.drain()
        if self.callbacks is not None:
            await self.callbacks.stop()
            self.callbacks.store.close()
        if self.ami is not None:
            await self.ami.close()
        if self.speech is not None:
            close = getattr(self.speech.recognizer, "close", None)  # the recogniser's worker threads
            if close is not None:
                close()
        await self.directory.close()
        await self.memory.close()
        if self.contexts is not None:
            await self.contexts.close()
        await self.flow.sms.close()
        if self.audit is not None:
            self.audit.close()


def build_router(settings: Settings) -> Router:
    """Every component of one router, edge by edge (each builder below is one edge or store)."""
    catalogue = Catalogue.load(settings.catalogue_file)
    policy = build_policy(settings, catalogue)
    pseudo = make_pseudonymizer(settings)
    metrics = RouterMetrics()
    metrics.node_info.labels(settings.node.name or settings.ami.host).set(1)  # dashboards group routers by node
    directory = build_directory(settings, pseudo, metrics)
    memory = build_memory(settings, metrics)
    sms = build_sms(settings, metrics)
    audit = build_audit(settings)
    ami = build_ami(settings)
    queue_model, outcomes = build_pbx_watchers(ami, metrics)
    handoff, contexts, agents = build_handoff(settings, catalogue, policy, pseudo, metrics, audit)
    if outcomes is not None:
        outcomes.on_answered = agents.answered
    speech = build_speech(settings, catalogue, ami)
    placer = build_placer(settings, pseudo, policy, ami, queue_model, agents)
    flow = CallFlow(
        policy=policy,
        directory=directory,
        memory=memory,
        pseudonymizer=pseudo,
        capture=build_capture(settings, catalogue, speech),
        config=flow_config(settings),
        sms=sms,
        queue_state=queue_model.snapshot if queue_model is not None else None,
        callbacks=placer.store if placer is not None else None,
        handoff=handoff,
        contexts=contexts,
        on_result=_all(audit.write, metrics.observe_call, outcomes.on_result if outcomes is not None else None),
    )
    correction = CorrectionHandler(catalogue, contexts, lambda: memory_ttl_s(policy), on_correction=agents.corrected)
    server = build_agi_server(settings, {
        HOTLINE_SCRIPT: flow, CORRECT_SCRIPT: correction, TRANSFER_SCRIPT: TransferHandler(handoff, contexts),
    })  # fmt: skip
    calls_api = CallsAPI(contexts, api_token(settings)) if settings.handoff.api else None
    register_sources(metrics, server, ami, queue_model, placer, speech, policy, catalogue, audit, calls_api)
    return Router(
        settings,
        catalogue,
        policy,
        server,
        flow,
        directory,
        memory,
        ami,
        speech,
        placer,
        outcomes,
        audit,
        metrics,
        queue_model,
        contexts,
        calls_api,
    )


# ------------------------------------------------------------------------------------ one builder per edge


def build_policy(settings: Settings, catalogue: Catalogue) -> PolicyHolder:
    """The policy in force, and the candidate of a gradual rollout if one is set."""
    candidate = (
        load_policy(settings.candidate_policy_file, catalogue=catalogue) if settings.candidate_policy_file else None
    )
    return PolicyHolder(load_policy(settings.policy_file, catalogue=catalogue), candidate, settings.candidate_share)


def memory_ttl_s(policy: PolicyHolder) -> float:
    """How long caller memory (and with it an agent's context) lasts under the policy in force."""
    return policy.current.memory_ttl.total_seconds()


def build_directory(settings: Settings, pseudo: Pseudonymizer, metrics: RouterMetrics) -> AccountDirectory:
    """The online-account directory: SQLite (imported), HTTP (the operator's service) or none; timed."""
    ds = settings.directory
    if ds.backend == "sqlite":
        directory: AccountDirectory = SQLiteDirectory(
            settings.path(ds.sqlite_path), pseudo, timeout=ds.timeout_ms / 1000
        )
    elif ds.backend == "http":
        directory = HTTPDirectory(
            ds.http_url,
            timeout=ds.http_timeout_ms / 1000,
            identify_by=ds.http_identify_by,  # type: ignore[arg-type]
            cache_ttl=ds.http_cache_ttl_s,
        )
    else:
        return NoDirectory()
    return TimedDirectory(directory, metrics, ds.backend)


def build_memory(settings: Settings, metrics: RouterMetrics) -> CallerMemory:
    """Caller memory for the repeat rules: in-process, or Redis shared by several routers and nodes; timed."""
    memory: CallerMemory
    if settings.state.backend == "redis":
        memory = RedisCallerMemory(settings.state.redis_url, timeout=settings.state.timeout_ms / 1000)
    else:
        memory = InMemoryCallerMemory()
    return TimedMemory(memory, metrics, settings.state.backend)


def build_sms(settings: Settings, metrics: RouterMetrics) -> SmsSender:
    """The SMS gateway that sends a deflected caller their link (HTTP), or none."""
    if settings.sms.backend == "http":
        return TimedSms(HTTPSmsGateway(settings.sms.url, timeout=settings.sms.timeout_ms / 1000), metrics)
    return NoSms()


def build_audit(settings: Settings) -> AuditLog:
    """The audit trail: one JSON line per decision, rotated by size."""
    return AuditLog(
        settings.path(settings.audit_file),
        max_bytes=settings.audit_max_mb * 1024 * 1024,
        backups=settings.audit_backups,
    )


def build_pbx_watchers(
    ami: AMIClient | None, metrics: RouterMetrics
) -> tuple[QueueModel | None, OutcomeTracker | None]:
    """What the router reads from its PBX over AMI: queue state, call outcomes, security events."""
    if ami is None:
        return None, None
    queue_model = QueueModel()
    queue_model.attach(ami)
    outcomes = OutcomeTracker()  # one JSON line per call on the agi_router.outcome logger
    outcomes.attach(ami)
    SecurityEvents(ami, metrics)  # the PBX's refused requests -> agi_router_sip_security_events_total
    return queue_model, outcomes


def build_handoff(
    settings: Settings,
    catalogue: Catalogue,
    policy: PolicyHolder,
    pseudo: Pseudonymizer,
    metrics: RouterMetrics,
    audit: AuditLog,
) -> tuple[Handoff, ContextStore, AgentEvents]:
    """The agent's side: the call's context (headers, whisper), its store, and the agents' events."""
    hs = settings.handoff
    handoff = Handoff(
        catalogue,
        pseudo.subkey(b"handoff"),
        HandoffConfig(whisper=hs.whisper, headers=hs.headers, transcript=hs.transcript),
    )
    contexts: ContextStore = (
        RedisContextStore(settings.state.redis_url, timeout=settings.state.timeout_ms / 1000)
        if settings.state.backend == "redis"
        else InMemoryContextStore()
    )
    samples = settings.path(Path(settings.sampling.folder)) if settings.sampling.enabled else None
    agents = AgentEvents(handoff, contexts, metrics, audit, lambda: memory_ttl_s(policy), samples_folder=samples)
    return handoff, contexts, agents


def build_placer(
    settings: Settings,
    pseudo: Pseudonymizer,
    policy: PolicyHolder,
    ami: AMIClient | None,
    queue_model: QueueModel | None,
    agents: AgentEvents,
) -> CallbackPlacer | None:
    """Accepted callbacks (SQLite, or Redis shared by routers and nodes) and their placer over AMI."""
    if ami is None or queue_model is None:
        return None
    store: CallbackRecords
    if settings.state.backend == "redis":  # several routers: accepted callbacks outlive the one that took them
        store = RedisCallbackStore(pseudo.subkey(b"callbacks"), settings.state.redis_url)
    else:
        store = CallbackStore(settings.path(Path("callbacks.sqlite3")), pseudo.subkey(b"callbacks"))
    if store.recovered:
        log.warning("%d callback(s) were being placed when the router stopped: pending again", store.recovered)
    return CallbackPlacer(
        store,
        ami,
        queue_model.snapshot,
        lambda now: is_open(policy.current, now),
        context_variables=agents.callback_variables,  # the agent who takes it gets the call's context
    )


def build_capture(settings: Settings, catalogue: Catalogue, speech: SpeechCapture | None) -> ChainedCapture:
    """How the motive is obtained, in order: the dialplan's hint, the caller's words, the DTMF menu."""
    fs = settings.flow
    sources: list[MotiveCapture] = [HintCapture()]
    if speech is not None:
        sources.append(speech)
    menu = DTMFMenuConfig(
        attempts=fs.menu_attempts, timeout_ms=fs.menu_timeout_ms, fallback_budget_s=fs.fallback_budget_s
    )
    sources.append(
        DTMFMenuCapture(catalogue, menu, PromptLengths(settings.path(Path(settings.speech.sounds_dir))).seconds)
    )
    return ChainedCapture(sources)


def flow_config(settings: Settings) -> CallFlowConfig:
    fs = settings.flow
    return CallFlowConfig(
        call_deadline=fs.call_deadline,
        decision_budget=fs.decision_budget_ms / 1000,
        directory_wait=fs.directory_wait_ms / 1000,
        answer=fs.answer,
    )


def build_agi_server(settings: Settings, scripts: Mapping[str, AGIHandler]) -> AGIServer:
    """The FastAGI server: the hotline, the agents' correction and transfer scripts."""
    a = settings.agi
    return AGIServer(
        scripts,
        AGIServerConfig(
            host=a.host,
            port=a.port,
            max_sessions=a.max_sessions,
            header_timeout=a.header_timeout,
            command_timeout=a.command_timeout,
        ),
    )


def register_sources(
    metrics: RouterMetrics,
    server: AGIServer,
    ami: AMIClient | None,
    queue_model: QueueModel | None,
    placer: CallbackPlacer | None,
    speech: SpeechCapture | None,
    policy: PolicyHolder,
    catalogue: Catalogue,
    audit: AuditLog,
    calls_api: CallsAPI | None,
) -> None:
    """What /metrics reads at scrape time from each component."""
    src = metrics.sources
    src.server, src.ami, src.queues, src.placer, src.speech = server, ami, queue_model, placer, speech
    src.callback_store = placer.store if placer is not None else None
    src.policy, src.catalogue_version = policy, catalogue.version
    src.extra.append(lambda: audit_metrics(audit))
    src.extra.append(lambda: [
        CounterMetricFamily("agi_router_log_lines_dropped", "Log lines dropped: the log reader did not keep up",
                            value=DROPPED.lines)
    ])  # fmt: skip
    if calls_api is not None:  # requests without the right token: a probe, or a CTI with a stale token
        src.extra.append(lambda: [
            CounterMetricFamily("agi_router_calls_api_refused", "GET /calls/{ref} refused: no or wrong token",
                                value=calls_api.refused)
        ])  # fmt: skip


def api_token(settings: Settings) -> str:
    """The bearer token of ``GET /calls/{ref}``: ``$AGI_ROUTER_API_TOKEN``, else ``[handoff] token_file``
    (created with a random token, mode 0600, on first start)."""
    token = os.environ.get("AGI_ROUTER_API_TOKEN", "")
    if token:
        if len(token) < 16:
            raise ConfigError("AGI_ROUTER_API_TOKEN must have at least 16 characters", key="handoff.token_file")
        return token
    return load_or_create_key(settings.path(settings.handoff.token_file)).decode("ascii", errors="replace")


def _all(*consumers: Callable[[CallResult], None] | None) -> Callable[[CallResult], None]:
    def run(r: CallResult) -> None:
        for f in consumers:
            if f is None:
                continue
            try:
                f(r)
            except Exception:
                log.exception("call result consumer failed")

    return run


async def _sweep(outcomes: OutcomeTracker, every_s: float = 60.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        outcomes.sweep()


def build_ami(settings: Settings) -> AMIClient | None:
    a = settings.ami
    if not a.enabled:
        return None
    from .asterisk_setup import ami_secret

    secret = ami_secret(settings)  # the one `agi-router asterisk setup` gives Asterisk
    return AMIClient(
        AMIConfig(host=a.host, port=a.port, username=a.username, secret=secret, ping_interval=a.ping_interval)
    )


def build_speech(settings: Settings, catalogue: Catalogue, ami: AMIClient | None) -> SpeechCapture | None:
    """Live-audio capture, or None (with the reason logged): the DTMF menu then serves every caller."""
    sp = settings.speech
    if not sp.enabled:
        return None
    if ami is None:
        log.warning("live audio disabled: it needs AMI ([ami] enabled = false)")
        return None
    from .speech.pipeline import TranscribeThenUnderstand

    try:
        recognizer = build_recognizer(settings)
    except ConfigError as exc:
        log.error("live audio disabled, callers get the DTMF menu: %s", exc)
        return None
    sounds = settings.path(Path(sp.sounds_dir))
    ensure_streamed_prompts(catalogue, sounds)
    confirm = ConfirmPrompts(catalogue, sounds)
    if sp.confirm:
        confirm.build_missing_in_background()
    prompt = _load_prompt(sounds / "router" / "ask-motive.wav")
    reprompt = _load_prompt(sounds / "router" / "not-understood.wav")
    if prompt is None:
        log.warning("no %s: the prompt is played with STREAM FILE (no barge-in)", sounds / "router/ask-motive.wav")
    return SpeechCapture(
        LegRegistry(ami),
        PortPool(sp.rtp_port_start, sp.rtp_port_end),
        TranscribeThenUnderstand(recognizer, build_understander(settings, catalogue)),
        speech_config(settings),
        prompt=prompt,
        reprompt=reprompt,
        confirm_prompt=confirm.pcm,
        sampler=build_sampler(settings),
        out_of_scope=_load_prompt(sounds / "router" / "out-of-scope.wav"),
    )


def build_sampler(settings: Settings) -> Sampler | None:
    """Opt-in capture-audio sampling, or None (the default: nothing is kept)."""
    sa = settings.sampling
    if not sa.enabled:
        return None
    store = sample_store(settings)
    log.info(
        "capture audio sampling ON: %.0f %% of consenting calls, kept %g days in %s (encrypted)",
        100 * sa.rate,
        sa.retention_days,
        store.folder,
    )
    return Sampler(store, sa.rate, consent_variable=sa.consent_variable)


def build_recognizer(settings: Settings) -> WhisperRecognizer | ProcessRecognizer:
    """The settings' Whisper recogniser (model assembled on first use): ``workers`` threads in this process,
    or ``processes`` worker processes; ConfigError when it cannot be."""
    from .speech.capacity import ProcessRecognizer, auto_processes
    from .speech.model import resolve_model_dir
    from .speech.recognizer import WhisperRecognizer

    sp = settings.speech
    model_dir = resolve_model_dir(settings.data_dir, Path(sp.model_dir) if sp.model_dir else None)
    lang, below = sp.identify_language, sp.other_language_below
    if sp.processes == "auto":
        processes, why = auto_processes()
    else:
        processes, why = int(sp.processes), "[speech] processes"
    if processes:
        rec = ProcessRecognizer(
            model_dir, processes=processes, beam_size=sp.beam_size, window_s=sp.window_s, batch=sp.batch,
            detect_language=lang, other_language_below=below,
        )  # fmt: skip
        log.info("recogniser: %d worker process(es) x batch %d (%s); model loaded in %.1f s, a decode takes "
                 "%.0f ms here: the admission rule starts from that", processes, sp.batch, why, rec.load_s,
                 rec.load.decode_s * 1000)  # fmt: skip
        return rec
    log.info("recogniser: %d thread(s) in the router x batch %d (%s)", sp.workers, sp.batch, why)
    return WhisperRecognizer(
        model_dir, workers=sp.workers, beam_size=sp.beam_size, window_s=sp.window_s, batch=sp.batch,
        detect_language=lang, other_language_below=below,
    )  # fmt: skip


def sample_store(settings: Settings) -> SampleStore:
    """The capture samples' folder and key (whether sampling is on or not: to label and evaluate them)."""
    sa = settings.sampling
    key = make_pseudonymizer(settings).subkey(b"samples v1")
    return SampleStore(settings.path(Path(sa.folder)), key, retention_days=sa.retention_days, max_mb=sa.max_mb)


def build_understander(settings: Settings, catalogue: Catalogue) -> Understander:
    """Transcript -> level and motive: exactly what a live call runs after recognition (and what
    ``agi-router motive classify`` and ``speech eval`` run)."""
    from .motives.classifier import MotiveClassifier, RejectRule, load_out_of_scope

    u = settings.understanding
    # reject rule chosen on the catalogue's examples AND the bundled out-of-scope [tune] sentences
    classifier = MotiveClassifier(catalogue, out_of_scope=load_out_of_scope()[0])
    return Understander(
        catalogue,
        classifier,
        Thresholds(
            motive=RejectRule(u.motive_confidence, u.motive_margin) if u.motive_confidence >= 0 else None,
            queue_confidence=u.queue_confidence,
            confirm_confidence=u.confirm_confidence,
            part_queue_confidence=u.part_queue_confidence,
        ),
    )


class ConfirmPrompts:
    """The "Vous appelez pour X ?" questions, streamed by the router: loaded from ``sounds`` when first
    asked for; missing ones are spoken in a background thread at start-up (espeak-ng, ~60 ms each). A
    motive whose question is not there yet is simply not confirmed (the caller is asked again)."""

    def __init__(self, catalogue: Catalogue, sounds: Path) -> None:
        self.catalogue = catalogue
        self.sounds = sounds
        self._cache: dict[str, npt.NDArray[np.int16]] = {}

    def path(self, motive_id: str) -> Path:
        return self.sounds / f"{CONFIRM_PREFIX}{motive_id}.wav"

    def pcm(self, motive_id: str) -> npt.NDArray[np.int16] | None:
        if motive_id not in self._cache:
            pcm = _load_prompt(self.path(motive_id))
            if pcm is None:
                return None
            self._cache[motive_id] = pcm
        return self._cache[motive_id]

    def build_missing_in_background(self) -> threading.Thread | None:
        from .prompts import build_prompts

        missing = [f"{CONFIRM_PREFIX}{m.id}" for m in self.catalogue if m.kind == "normal"]
        missing = [p for p in missing if not (self.sounds / f"{p}.wav").exists()]
        if not missing:
            return None

        def speak() -> None:
            try:
                build_prompts(self.catalogue, self.sounds, only=missing)
                log.info("spoke %d confirmation question(s) into %s", len(missing), self.sounds)
            except (ConfigError, OSError, subprocess.CalledProcessError) as exc:
                log.warning("could not speak the confirmation questions into %s: %s", self.sounds, exc)

        t = threading.Thread(target=speak, name="confirm-prompts", daemon=True)
        t.start()
        return t


def speech_config(settings: Settings) -> SpeechConfig:
    """The live-audio settings as the call flow uses them (tests build theirs the same way)."""
    sp = settings.speech
    return SpeechConfig(
        bind_host=sp.bind_host,
        advertise_host=sp.advertise_host,
        asterisk_host=sp.asterisk_host,
        attempts=sp.attempts,
        no_input_ms=sp.no_input_ms,
        lease_s=sp.lease_s,
        confirm=sp.confirm,
        admit_wait_s=sp.admit_wait_ms / 1000,
        recognition_timeout_s=sp.recognition_timeout_ms / 1000,
        confirm_attempts=sp.confirm_attempts,
        confirm_no_input_ms=sp.confirm_no_input_ms,
        fallback_budget_s=settings.flow.fallback_budget_s,
        jitter_packets=sp.jitter_packets,
        turn=sp.turn,
        turn_extend_ms=sp.turn_extend_ms,
        endpointer=EndpointerConfig(
            frame_ms=sp.frame_ms,
            aggressiveness=sp.aggressiveness,
            hangover_ms=sp.hangover_ms,
            pre_roll_ms=sp.pre_roll_ms,
            max_utterance_ms=sp.max_utterance_ms,
        ),
    )


def menu_capture(settings: Settings, catalogue: Catalogue) -> DTMFMenuCapture:
    """The DTMF menu as the call flow uses it, timed by the router's own prompt files."""
    fs = settings.flow
    menu = DTMFMenuConfig(
        attempts=fs.menu_attempts, timeout_ms=fs.menu_timeout_ms, fallback_budget_s=fs.fallback_budget_s
    )
    return DTMFMenuCapture(catalogue, menu, PromptLengths(settings.path(Path(settings.speech.sounds_dir))).seconds)


STREAMED_PROMPTS = ("router/ask-motive", "router/not-understood", "router/out-of-scope")


def ensure_streamed_prompts(catalogue: Catalogue, sounds: Path) -> None:
    """The prompts the router streams itself (for barge-in) are spoken on first start if missing, so
    live audio works out of the box; ``agi-router asterisk setup`` installs the whole set for Asterisk."""
    from .prompts import build_prompts

    missing = [p for p in STREAMED_PROMPTS if not (sounds / f"{p}.wav").exists()]
    if not missing:
        return
    try:
        build_prompts(catalogue, sounds, only=missing)
        log.info("spoke the missing prompt(s) %s into %s (espeak-ng)", ", ".join(missing), sounds)
    except (ConfigError, OSError, subprocess.CalledProcessError) as exc:
        log.warning("could not speak the prompts %s into %s: %s", ", ".join(missing), sounds, exc)


def _load_prompt(path: Path) -> npt.NDArray[np.int16] | None:
    """An 8 kHz mono 16-bit WAV as PCM, or None (missing or in another format: logged)."""
    try:
        with wave.open(str(path)) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
                log.warning("%s is not 8 kHz mono 16-bit: not streamed", path)
                return None
            return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).copy()
    except (OSError, wave.Error, EOFError):
        return None


async def run(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    # what fails in a second is checked before what takes ten (the model): the ports, the data directory
    agi_sock = bind_listener(settings.agi.host, settings.agi.port, what="FastAGI", key="agi.port")
    metrics_sock = None
    try:
        if settings.metrics.enabled:
            metrics_sock = bind_listener(
                settings.metrics.host, settings.metrics.port, what="metrics (/metrics, /healthz)", key="metrics.port"
            )
        check_data_dir(settings.data_dir)
        router = build_router(settings)
    except BaseException:
        agi_sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        raise
    await _serve(settings, router, agi_sock, metrics_sock, ready)


def check_data_dir(path: Path) -> None:
    """The data directory exists (created if needed) and takes files, or ConfigError saying which and why."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"the data directory {path} is not usable: {exc.strerror or exc}; create it writable for this user, "
            "or set data_dir",
            key="data_dir",
        ) from None


async def _serve(
    settings: Settings,
    router: Router,
    agi_sock: socket.socket,
    metrics_sock: socket.socket | None,
    ready: asyncio.Event | None,
) -> None:
    if router.ami is not None:
        await router.ami.start()  # connects in the background, for ever; routing never waits for it
    if router.callbacks is not None:
        router.callbacks.start()
    sweeper = asyncio.create_task(_sweep(router.outcomes)) if router.outcomes is not None else None
    await router.server.start(agi_sock)
    http: MetricsServer | None = None
    if metrics_sock is not None and router.metrics is not None:
        http = MetricsServer(
            router.metrics,
            settings.metrics.host,
            settings.metrics.port,
            health=router.health,
            calls=router.calls_api.answer if router.calls_api is not None else None,
        )
        await http.start(metrics_sock)
    elif metrics_sock is not None:
        metrics_sock.close()
    log.info(
        "agi-router ready: policy %s, catalogue %s (%d motives), state=%s, directory=%s",
        router.policy.current.label,
        router.catalogue.version,
        len(router.catalogue),
        settings.state.backend,
        settings.directory.backend,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, router.reload_policy)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down: %d call(s) in progress get a grace period", router.server.active)
        if sweeper is not None:
            sweeper.cancel()
        if http is not None:
            await http.close()
        await router.close()
