"""Every Prometheus metric the router exports, in one place.

Two ways in, so that no protocol module imports prometheus_client:

* **per call** - :meth:`RouterMetrics.observe_call` reads the :class:`CallResult` the call flow
  reports at the end of every AGI session (decision, rule, segment, motive, latencies, speech
  rounds) and counts it;
* **at scrape time** - collectors read the counters the components already keep (AGI server,
  AMI client, queue model, callback placer and store, media legs) so the hot paths pay nothing.

Conventions: names ``agi_router_*``, seconds for time, ``_total`` for counters; labels are
bounded sets (action, rule, segment, motive id, queue, reason code): never a caller, a number, a
call id. Latency histograms share :data:`LATENCY_BUCKETS`: fine below 5 ms and a boundary at
exactly 0.1 s, the decision budget.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..policy.model import Action, QueueSnapshot

if TYPE_CHECKING:
    from ..agi.server import AGIServer
    from ..ami.client import AMIClient
    from ..callbacks.placer import CallbackPlacer
    from ..callflow.flow import CallResult, PolicyHolder
    from ..callflow.speech import SpeechCapture

__all__ = ["LATENCY_BUCKETS", "RouterMetrics", "Sources"]

# 0.5 ms steps up to 5 ms, then coarser; 0.1 is a boundary (the decision budget)
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TURN_BUCKETS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)

PREFIX = "agi_router_"
log = logging.getLogger(__name__)


class _QueueSource(Protocol):
    synced: bool

    def snapshots(self) -> dict[str, QueueSnapshot]: ...


class _CountSource(Protocol):
    def count(self, status: str) -> int: ...


@dataclass
class Sources:
    """What the scrape-time collectors read; any of them may be absent (feature off)."""

    server: AGIServer | None = None
    ami: AMIClient | None = None
    queues: _QueueSource | None = None
    placer: CallbackPlacer | None = None
    callback_store: _CountSource | None = None
    speech: SpeechCapture | None = None
    policy: PolicyHolder | None = None
    catalogue_version: str = ""
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


SPEECH_LEVELS = ("deflectable", "queue", "several", "person", "confirmed", "out_of_scope")  # closed: MotiveFacts.level


class RouterMetrics:
    """The router's metrics on their own registry (a fresh one per instance: tests run many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        if registry is None:  # agi_router_process_resident_memory_bytes, _open_fds, ... (Linux /proc)
            ProcessCollector(namespace="agi_router", registry=r)
        self.sources = Sources()
        p = PREFIX
        # traffic and decisions
        self.calls = Counter(p + "calls", "AGI sessions of the hotline, by how they ended", ["result"], registry=r)
        self.decisions = Counter(
            p + "decisions", "Routing decisions", ["action", "queue", "segment", "motive"], registry=r
        )
        self.cohort_decisions = Counter(
            p + "cohort_decisions",
            "Decisions by caller cohort (policy/cohorts.py: fragile flag, DTMF fallback, capture failed, other "
            "language, repeat caller; a call counts in each it belongs to) and action",
            ["cohort", "action"],
            registry=r,
        )
        self.decisions_by_arm = Counter(
            p + "policy_arm_decisions",
            "Decisions by rollout arm (current policy | candidate), action and segment",
            ["arm", "action", "segment"],
            registry=r,
        )
        # the agent's side (handoff/): answered calls and the agents' corrections, per capture method, so
        # that "routing confirmed by agents" = 1 - corrections / answered, per queue and method
        self.agent_answered = Counter(
            p + "agent_answered",
            "Routed calls answered by an agent, by queue and by how the motive was captured",
            ["queue", "method"],
            registry=r,
        )
        self.agent_corrections = Counter(
            p + "agent_corrections",
            "Callers an agent moved to another queue (feature code), by queue before and after and capture method",
            ["from_queue", "to_queue", "method"],
            registry=r,
        )
        # the SIP edge (sip/security.py): Asterisk's security events, by kind and service
        self.sip_security_events = Counter(
            p + "sip_security_events",
            "Requests Asterisk refused for security (failed auth, unknown account, ACL, bad request, limit)",
            ["event", "service"],
            registry=r,
        )
        self.rules = Counter(p + "policy_rules", "Decisions by the policy rule that decided", ["rule"], registry=r)
        self.repeat_hangups = Counter(
            p + "repeat_hangups", "Repeat callers hung up on (same motive within the window)", registry=r
        )
        self.priority_promotions = Counter(
            p + "priority_promotions", "Callers promoted to a priority agent after repeated hang-ups", registry=r
        )
        self.deflections_skipped = Counter(
            p + "deflections_skipped",
            "Deflectable motives NOT deflected, by why (account, confidence, safeguard)",
            ["reason"],
            registry=r,
        )
        self.safeguards = Counter(
            p + "safeguard_triggers", "Safeguard rules that changed a decision", ["safeguard"], registry=r
        )
        self.fallbacks = Counter(
            p + "fallbacks", "Calls sent to the fallback (human) route, by cause", ["reason"], registry=r
        )
        self.deadline_hits = Counter(
            p + "deadline_hits", "Time budgets exceeded (call deadline, decision budget)", ["budget"], registry=r
        )
        self.call_errors = Counter(
            p + "call_errors", "Degraded calls: a dependency failed, the call went on without it", ["source"],
            registry=r,
        )  # fmt: skip
        self.callback_offers = Counter(
            p + "callback_offers", "Callback offers to callers of a saturated queue", ["answer"], registry=r
        )
        # motive capture
        self.captures = Counter(
            p + "motive_captures", "How the motive was obtained (speech, dtmf, variable, none)", ["method"], registry=r
        )
        self.speech_rounds = Counter(
            p + "speech_rounds", "Prompt-and-listen rounds by outcome (no_input, no_match, ...)", ["outcome"],
            registry=r,
        )  # fmt: skip
        self.understanding = Counter(
            p + "speech_understanding",
            "Recognised sentences by what the router acted on (deflectable: the exact motive; queue: only its "
            "skill; several; person; confirmed after a question; out_of_scope: twice about nothing this line handles, "
            "to a person)",
            ["level"],
            registry=r,
        )
        self.dtmf_fallbacks = Counter(
            p + "dtmf_fallbacks", "Calls where speech was tried and the DTMF menu gave the motive", registry=r
        )

        def histogram(
            name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = LATENCY_BUCKETS
        ) -> Histogram:
            return Histogram(p + name, doc, labels, buckets=buckets, registry=r)

        self.confidence = histogram(
            "motive_confidence", "Classifier confidence of recognised motives", buckets=CONFIDENCE_BUCKETS
        )
        # latency
        self.decision_seconds = histogram(
            "decision_seconds", "Motive known -> decision made (history, directory wait, policy)"
        )
        self.speech_to_route_seconds = histogram(
            "speech_to_route_seconds", "End of speech -> routing variables written"
        )
        self.voice_to_route_seconds = histogram(
            "voice_to_route_seconds",
            "The caller's last voiced audio -> routing variables written: what the caller waits (end of turn + "
            "recognition + decision)",
            buckets=TURN_BUCKETS,
        )
        self.recognition_seconds = histogram(
            "recognition_seconds", "Recogniser + classifier run time per utterance used"
        )
        self.end_of_speech_delay_seconds = histogram(
            "end_of_speech_delay_seconds", "Last voiced audio -> end of speech declared (VAD hangover + lag)"
        )
        self.rtp_jitter_seconds = histogram(
            "rtp_jitter_seconds", "RFC 3550 interarrival jitter of each capture leg at its end", buckets=JITTER_BUCKETS
        )
        # dependencies (fed by the Timed* wrappers)
        self.directory_seconds = histogram("directory_lookup_seconds", "Account directory lookups", ("backend",))
        self.directory_errors = Counter(
            p + "directory_errors", "Account directory lookups that failed or timed out", ["backend"], registry=r
        )
        self.state_seconds = histogram("state_store_seconds", "Caller-memory store operations", ("backend", "op"))
        self.state_errors = Counter(
            p + "state_store_errors", "Caller-memory store operations that failed", ["backend", "op"], registry=r
        )
        self.sms = Counter(p + "sms", "SMS links sent with a deflection, by result", ["result"], registry=r)
        self.info = Gauge(p + "build_info", "The running agi-router (value 1)", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.node_info = Gauge(
            p + "node_info", "The PBX node this router serves (value 1; [node] name, else its AMI host)", ["node"],
            registry=r,
        )  # fmt: skip
        self.started = Gauge(p + "start_time_seconds", "Unix time the router started", registry=r)
        self.started.set(time.time())
        r.register(_ScrapeCollector(self.sources))
        # the label values every dashboard panel needs from the first scrape, before any call
        for result in ("decided", "fallback", "hung_up"):
            self.calls.labels(result)
        for budget in ("call", "decision"):
            self.deadline_hits.labels(budget)

    # -- per call ------------------------------------------------------------------------------------

    def observe_call(self, result: CallResult) -> None:
        d = result.decision
        motive = result.motive
        if d is not None:
            self.calls.labels("decided").inc()
            self.decisions.labels(d.action.value, d.queue or "", d.segment.value, d.motive_id or "none").inc()
            self.decisions_by_arm.labels(result.arm, d.action.value, d.segment.value).inc()
            for cohort in result.cohorts:
                self.cohort_decisions.labels(cohort, d.action.value).inc()
            self.rules.labels(d.rule).inc()
            if d.action is Action.HANGUP:
                self.repeat_hangups.inc()
            elif d.action is Action.PRIORITY:
                self.priority_promotions.inc()
            for reason in d.reasons:
                if reason.startswith("safeguard."):
                    self.safeguards.labels(reason.removeprefix("safeguard.")).inc()
                elif reason.startswith("deflect.skipped_"):
                    self.deflections_skipped.labels(reason.removeprefix("deflect.skipped_")).inc()
                elif reason.startswith("callback."):
                    self.callback_offers.labels(reason.removeprefix("callback.")).inc()
        elif result.hung_up:
            self.calls.labels("hung_up").inc()
        else:
            self.calls.labels("fallback").inc()
        if result.fallback_reason:
            self.fallbacks.labels(result.fallback_reason).inc()
            if result.fallback_reason == "deadline":
                self.deadline_hits.labels("call").inc()
            elif result.fallback_reason == "decision_budget":
                self.deadline_hits.labels("decision").inc()
        for err in result.errors:
            self.call_errors.labels(err.split(":", 1)[0]).inc()
        if motive is not None:
            self.captures.labels(motive.method).inc()
            if motive.method == "speech" and motive.motive_id:
                self.confidence.observe(motive.confidence)
            if motive.method == "speech" and motive.level in SPEECH_LEVELS:
                self.understanding.labels(motive.level).inc()
            if motive.method == "dtmf" and result.speech_rounds:
                self.dtmf_fallbacks.inc()
        for rnd in result.speech_rounds:
            self.speech_rounds.labels(rnd.outcome).inc()
            if rnd.recognition_s is not None:
                self.recognition_seconds.observe(rnd.recognition_s)
            if rnd.endpoint_delay_s is not None:
                self.end_of_speech_delay_seconds.observe(rnd.endpoint_delay_s)
            if rnd.jitter_s is not None:
                self.rtp_jitter_seconds.observe(rnd.jitter_s)
        if result.decision_latency_s is not None:
            self.decision_seconds.observe(result.decision_latency_s)
        if result.speech_to_route_s is not None:
            self.speech_to_route_seconds.observe(result.speech_to_route_s)
        if result.voice_to_route_s is not None:
            self.voice_to_route_seconds.observe(result.voice_to_route_s)


class _ScrapeCollector(Collector):
    """Reads the components' own counters when Prometheus scrapes (runs on the event loop)."""

    def __init__(self, sources: Sources) -> None:
        self.s = sources

    def collect(self) -> Iterator[Metric]:
        # one failing source (a bug, a closed store) costs its own metrics, never the whole scrape
        for part in (self._agi, self._ami, self._queues, self._callbacks, self._media, self._policy, *self.s.extra):
            try:
                metrics = list(part())
            except Exception:
                log.exception("metrics source %s failed", getattr(part, "__name__", part))
                continue
            yield from metrics

    def _agi(self) -> Iterator[Metric]:
        s, p = self.s, PREFIX
        if s.server is not None:
            yield _gauge(p + "agi_sessions_active", "AGI sessions in progress", s.server.active)
            yield _counter(p + "agi_sessions", "AGI sessions handed to a route", s.server.sessions)
            errors = CounterMetricFamily(
                p + "agi_errors", "FastAGI connections and sessions that failed, by kind", labels=["kind"]
            )
            for kind, n in sorted(s.server.errors.items()):
                errors.add_metric([kind], n)
            yield errors

    def _ami(self) -> Iterator[Metric]:
        s, p = self.s, PREFIX
        if s.ami is not None:
            from ..ami.client import AMIState

            yield _gauge(p + "ami_up", "1 when the AMI session is logged in", s.ami.state is AMIState.CONNECTED)
            yield _counter(p + "ami_reconnects", "AMI connections re-established", s.ami.reconnects)
            yield _counter(p + "ami_events", "AMI events received", s.ami.events_received)

    def _queues(self) -> Iterator[Metric]:
        if self.s.queues is not None:
            yield from _queue_metrics(self.s.queues)

    def _callbacks(self) -> Iterator[Metric]:
        s, p = self.s, PREFIX
        if s.placer is not None:
            yield _counter(p + "callbacks_placed", "Callbacks placed (the caller's phone rang)", s.placer.placed)
            yield _counter(p + "callbacks_failed", "Callbacks given up after every attempt", s.placer.failed)
        if s.callback_store is not None:
            pending = s.callback_store.count("pending") + s.callback_store.count("placing")
            yield _gauge(p + "callbacks_pending", "Callbacks promised and not yet placed", pending)

    def _media(self) -> Iterator[Metric]:
        if self.s.speech is not None:
            yield from _media_metrics(self.s.speech)

    def _policy(self) -> Iterator[Metric]:
        s, p = self.s, PREFIX
        if s.policy is not None:
            info = GaugeMetricFamily(
                p + "policy_info", "The policy in force (value 1)", labels=["version", "catalogue"]
            )
            info.add_metric([s.policy.current.label, s.catalogue_version], 1)
            yield info


def _queue_metrics(queues: _QueueSource) -> Iterator[Metric]:
    p = PREFIX
    fams = {
        "waiting": GaugeMetricFamily(p + "queue_callers_waiting", "Callers waiting in the queue", labels=["queue"]),
        "available": GaugeMetricFamily(
            p + "queue_agents_available", "Agents logged in, not paused, not busy", labels=["queue"]
        ),
        "logged": GaugeMetricFamily(p + "queue_agents_logged_in", "Agents logged in", labels=["queue"]),
        "longest": GaugeMetricFamily(
            p + "queue_longest_wait_seconds", "Wait of the caller waiting longest", labels=["queue"]
        ),
        "estimated": GaugeMetricFamily(
            p + "queue_estimated_wait_seconds", "Estimated wait of a newcomer", labels=["queue"]
        ),
    }
    for name, q in sorted(queues.snapshots().items()):
        fams["waiting"].add_metric([name], q.waiting)
        fams["available"].add_metric([name], q.available_agents)
        fams["logged"].add_metric([name], q.logged_in_agents)
        fams["longest"].add_metric([name], q.longest_wait_s)
        fams["estimated"].add_metric([name], min(q.estimated_wait_s, 86400.0))
    yield from fams.values()
    yield _gauge(p + "queue_state_fresh", "1 when the queue model is in sync with Asterisk", queues.synced)


def _media_metrics(speech: SpeechCapture) -> Iterator[Metric]:
    p = PREFIX
    t = speech.totals
    live = list(speech.streams)

    def total(name: str) -> int:
        return int(getattr(t.rtp, name)) + sum(int(getattr(st.stats, name)) for st in live)

    yield _gauge(p + "media_streams_active", "Capture legs (RTP streams) in progress", len(live))
    yield _gauge(p + "rtp_ports_in_use", "RTP ports of the pool in use", speech.ports.in_use)
    yield _gauge(p + "rtp_ports_free", "RTP ports of the pool free", speech.ports.available)
    packets = CounterMetricFamily(p + "rtp_packets", "RTP packets, by direction", labels=["direction"])
    packets.add_metric(["in"], total("packets"))
    packets.add_metric(["out"], total("sent"))
    yield packets
    yield _counter(p + "rtp_lost_packets", "RTP sequence numbers never received", total("lost"))
    dropped = CounterMetricFamily(p + "rtp_dropped_packets", "Datagrams refused, by why", labels=["reason"])
    for reason in ("garbage", "foreign_source", "foreign_ssrc", "unsupported_pt", "duplicates", "late"):
        dropped.add_metric([reason], total(reason))
    dropped.add_metric(["overflow"], total("queue_overflow"))
    yield dropped
    yield _counter(p + "vad_frames", "Audio frames through the VAD", t.vad_frames)
    yield _counter(p + "vad_voiced_frames", "Audio frames the VAD found voiced", t.vad_voiced_frames)
    yield _counter(p + "recognizer_errors", "Utterances on which the recogniser raised", t.recognizer_errors)
    yield _counter(
        p + "speech_admission_refused",
        "Speech rounds not started because the recogniser was saturated (the caller got the DTMF menu)",
        t.admission_refused,
    )
    load = getattr(getattr(speech.recognizer, "recognizer", None), "load", None)
    if load is not None:
        yield _gauge(p + "recognizer_workers", "Parallel decoders (threads or processes)", load.workers)
        yield _gauge(p + "recognizer_inflight", "Utterances being decoded or waiting for a decoder", load.inflight)
        yield _counter(p + "recognizer_busy_seconds", "Decode time, summed over decoders", load.busy_s)
        yield _gauge(p + "recognizer_expected_seconds", "What a new utterance would wait now", load.expected_s())


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))
