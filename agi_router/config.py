"""Router settings: one TOML file (``--config`` or ``$AGI_ROUTER_CONFIG``); every key optional.

With no file at all the router runs on its embedded defaults: FastAGI on 127.0.0.1:4573,
in-process caller memory, the SQLite directory under ``data_dir``, the bundled 2024 policy.
Relative paths are resolved against ``data_dir`` (itself relative to the working directory).
See ``agi-router.example.toml`` for every key with its default.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._toml import TableReader, read_toml

__all__ = [
    "AGISettings",
    "AMISettings",
    "DirectorySettings",
    "FlowSettings",
    "HandoffSettings",
    "LogSettings",
    "MetricsSettings",
    "NodeSettings",
    "Settings",
    "SipSettings",
    "SmsSettings",
    "SpeechSettings",
    "StateSettings",
    "is_loopback",
    "load_settings",
]


_AGI_URL = re.compile(r"agi://[A-Za-z0-9.\[\]:-]+:\d{1,5}/[\w-]+")


@dataclass(frozen=True, slots=True)
class AGISettings:
    host: str = "127.0.0.1"
    port: int = 4573
    max_sessions: int = 500
    header_timeout: float = 2.0
    command_timeout: float = 5.0
    event_loop: str = "auto"  # auto (uvloop when installed) | asyncio | uvloop


@dataclass(frozen=True, slots=True)
class FlowSettings:
    call_deadline: float = 180.0
    decision_budget_ms: float = 100.0
    directory_wait_ms: float = 80.0
    answer: bool = False
    menu_attempts: int = 2
    menu_timeout_ms: int = 4000
    fallback_budget_s: float = 36.0  # a caller not understood is in a queue this long after their first sentence


@dataclass(frozen=True, slots=True)
class StateSettings:
    backend: str = "memory"  # memory | redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    timeout_ms: float = 50.0


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    backend: str = "sqlite"  # sqlite | http | none
    sqlite_path: Path = Path("directory.sqlite3")
    timeout_ms: float = 50.0
    http_url: str = ""
    http_timeout_ms: float = 150.0
    http_identify_by: str = "pseudonym"  # pseudonym | e164
    http_cache_ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class AMISettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "agi-router"
    secret: str = ""  # "" = $AGI_ROUTER_AMI_SECRET, else the secret file
    secret_file: Path = Path("ami.secret")  # created (0600) on first start; `agi-router asterisk setup` shares it
    ping_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class SpeechSettings:
    enabled: bool = True
    model_dir: str = ""  # "" = Whisper base assembled from the PyPI wheels under data_dir/models
    workers: int = 1
    beam_size: int = 1
    window_s: int = 6
    attempts: int = 2
    no_input_ms: int = 5000
    hangover_ms: int = 550
    turn: str = "silence"  # silence | semantic: end at a pause when the words are a complete answer (speech/turn.py)
    turn_extend_ms: int = 400  # more hangover after a connective ("et", "parce que") or a hesitation ("euh")
    aggressiveness: int = 2
    frame_ms: int = 20
    pre_roll_ms: int = 300
    max_utterance_ms: int = 10000
    lease_s: float = 2.0  # a capture leg whose lease the router stops renewing ends this long after
    confirm: bool = True  # plausible but unsure: "Vous appelez pour X ?" (yes/no/1/2) instead of re-asking
    # "auto": one worker process per CPU the router may use (affinity, cgroup quota, memory), threads on one CPU;
    # 0: decode in `workers` threads of the router; N: in N worker processes
    processes: int | str = "auto"
    batch: int = 4  # utterances of different callers decoded in one pass when they queue up (1: never)
    identify_language: bool = True  # the language heard (for the policy's other_language safeguard)
    other_language_below: float = 0.5  # heard as another language when French gets less than this probability
    admit_wait_ms: int = 1500  # a speech round starts only if recognition would answer within this
    recognition_timeout_ms: int = 5000  # no transcript this long after the end of speech: the DTMF menu
    confirm_attempts: int = 2
    confirm_no_input_ms: int = 3000
    sounds_dir: str = "sounds/fr"  # the router's prompts (streamed for barge-in; `asterisk setup` installs them)
    # media: the RTP ports of the capture legs, outside Asterisk's rtp.conf range
    rtp_port_start: int = 30000
    rtp_port_end: int = 31000
    bind_host: str = "127.0.0.1"
    advertise_host: str = "127.0.0.1"
    asterisk_host: str = "127.0.0.1"
    jitter_packets: int = 0


@dataclass(frozen=True, slots=True)
class UnderstandingSettings:
    """Where each level of ``motives/understanding.py`` starts (chosen on the project's tuning sentences:
    README, "Spoken motive"). ``motive_confidence`` < 0: the classifier's own cross-validated rule."""

    motive_confidence: float = 0.90
    motive_margin: float = 0.0
    queue_confidence: float = 0.60
    confirm_confidence: float = 0.30
    part_queue_confidence: float = 0.60


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """Opt-in sampling of capture audio (``speech/sampling.py``): off unless enabled here AND the caller
    did not object (the dialplan's notice sets ROUTER_SAMPLING_CONSENT=1)."""

    enabled: bool = False
    rate: float = 0.05  # share of consenting calls kept
    folder: str = "samples"  # under data_dir; encrypted files, mode 0600
    retention_days: float = 30.0
    max_mb: float = 500.0
    consent_variable: str = "ROUTER_SAMPLING_CONSENT"


@dataclass(frozen=True, slots=True)
class SmsSettings:
    backend: str = "none"  # none | http
    url: str = ""
    timeout_ms: float = 2000.0


@dataclass(frozen=True, slots=True)
class HandoffSettings:
    """What the agent receives with a routed call (``handoff/``): the whisper before the bridge, the
    ``X-Router-*`` headers on their INVITE, ``GET /calls/{ref}`` on the HTTP port, the ``*7`` correction."""

    whisper: str = "useful"  # off | on | useful (a precise motive or something the queue does not say)
    headers: bool = True
    transcript: bool = False  # the caller's words in GET /calls/{ref} (off: only what was understood)
    api: bool = True  # GET /calls/{ref}, bearer token from $AGI_ROUTER_API_TOKEN or token_file
    token_file: Path = Path("api.token")  # created (0600) on first start


@dataclass(frozen=True, slots=True)
class SipSettings:
    """The SIP edge that ``agi-router asterisk setup`` installs (``sip/``): where agents and softphones reach
    Asterisk, TLS + SRTP, the generated accounts. The SIPp test trunk stays on plain UDP, loopback only."""

    bind: str = "127.0.0.1"  # the TLS transport's address (0.0.0.0: every interface)
    tls: str = "auto"  # auto (on unless bind is loopback) | on | off (refused off loopback)
    tls_port: int = 5061
    cert_file: Path = Path("sip/tls/cert.pem")  # PEM; generated (self-signed) at setup with key_file if both missing
    key_file: Path = Path("sip/tls/key.pem")
    accounts_file: Path = Path("sip/accounts.json")  # created (0600) at setup with generated passwords
    edge: str = "none"  # none | kamailio (edge/kamailio.cfg in front: it terminates TLS, Asterisk stays on loopback)

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.bind)

    @property
    def exposed(self) -> bool:
        """Phones reach Asterisk from the network: directly (bind) or through the edge."""
        return not self.on_loopback or self.edge != "none"

    @property
    def tls_on(self) -> bool:
        """Asterisk's own TLS transport (behind the edge, TLS ends at Kamailio)."""
        return self.tls == "on" or (self.tls == "auto" and not self.on_loopback)

    @property
    def srtp(self) -> bool:
        """Accounts' media must be SRTP: it crosses the network (RTP does not go through the edge)."""
        return self.tls_on or self.edge != "none"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """The PBX node this router serves, as ``agi-router asterisk setup`` installs it (several nodes behind the
    SIP dispatcher of ``edge/dispatcher.cfg``; one node: the defaults). The AMI port installed is ``[ami] port``."""

    name: str = ""  # this node's name on metrics (agi_router_node_info) and the dashboard; "" = the AMI host
    routers: tuple[str, ...] = ()  # this node's routers (agi://host:port/3646) for ROUTER_AGI; () = this one
    sip_port: int = 5060  # the node's loopback UDP transport (SIPp trunk, the dispatcher)
    rtp_start: int = 10000  # the node's RTP range (rtp.conf): must not hold the router's capture ports
    rtp_end: int = 20000


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    enabled: bool = True  # GET /metrics (Prometheus) and /healthz
    host: str = "127.0.0.1"
    port: int = 9646


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("var")
    key_file: Path = Path("pseudonym.key")
    policy_file: Path | None = None  # None: the bundled 2024 policy
    candidate_policy_file: Path | None = None  # gradual rollout: a second policy for `candidate_share` of callers
    candidate_share: float = 0.0  # 0..1, sticky per caller (pseudonym)
    catalogue_file: Path | None = None  # None: the bundled catalogue
    audit_file: Path = Path("audit/decisions.jsonl")
    audit_max_mb: int = 50  # rotate the audit file at this size
    audit_backups: int = 20  # rotated files kept (retention by volume: (backups + 1) x max_mb)
    agi: AGISettings = field(default_factory=AGISettings)
    flow: FlowSettings = field(default_factory=FlowSettings)
    state: StateSettings = field(default_factory=StateSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    ami: AMISettings = field(default_factory=AMISettings)
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    understanding: UnderstandingSettings = field(default_factory=UnderstandingSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    handoff: HandoffSettings = field(default_factory=HandoffSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "<defaults>"

    def path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.data_dir / p


def _processes(sp: TableReader, default: int | str) -> int | str:
    value = sp.get("processes", object, default)
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise sp.err("processes", f'must be "auto" or a number of worker processes (0-64), got {value!r}')
    return sp.int_range("processes", 0, 64, 0)


def load_settings(path: Path | None = None) -> Settings:
    """Read settings; ``path`` None means ``$AGI_ROUTER_CONFIG`` or, failing that, defaults only."""
    if path is None and os.environ.get("AGI_ROUTER_CONFIG"):
        path = Path(os.environ["AGI_ROUTER_CONFIG"])
    if path is None:
        data_dir = Path(os.environ.get("AGI_ROUTER_DATA_DIR", "var"))
        return Settings(data_dir=data_dir)
    f = str(path)
    data = read_toml(path)
    root = TableReader(data, "", f)
    d = Settings()
    data_dir = Path(root.get("data_dir", str, str(d.data_dir)))
    key_file = Path(root.get("key_file", str, str(d.key_file)))
    policy_file = root.get("policy_file", str, "")
    candidate_file = root.get("candidate_policy_file", str, "")
    candidate_share = float(root.get("candidate_share", float, 0.0))
    if not 0.0 <= candidate_share <= 1.0:
        raise root.err("candidate_share", f"a share of callers between 0 and 1, not {candidate_share}")
    if candidate_share > 0 and not candidate_file:
        raise root.err("candidate_share", "set candidate_policy_file too (the policy those callers get)")
    catalogue_file = root.get("catalogue_file", str, "")
    audit_file = Path(root.get("audit_file", str, str(d.audit_file)))
    audit_max_mb = root.int_range("audit_max_mb", 1, 10000, d.audit_max_mb)
    audit_backups = root.int_range("audit_backups", 0, 10000, d.audit_backups)

    a = root.table("agi")
    agi = AGISettings(
        host=a.get("host", str, d.agi.host),
        port=a.int_range("port", 0, 65535, d.agi.port),
        max_sessions=a.int_range("max_sessions", 1, 100000, d.agi.max_sessions),
        header_timeout=a.float_range("header_timeout", 0.05, 60.0, d.agi.header_timeout),
        command_timeout=a.float_range("command_timeout", 0.05, 600.0, d.agi.command_timeout),
        event_loop=a.choice("event_loop", ("auto", "asyncio", "uvloop"), d.agi.event_loop),
    )
    a.finish()

    fl = root.table("flow")
    flow = FlowSettings(
        call_deadline=fl.float_range("call_deadline", 1.0, 3600.0, d.flow.call_deadline),
        decision_budget_ms=fl.float_range("decision_budget_ms", 5.0, 10000.0, d.flow.decision_budget_ms),
        directory_wait_ms=fl.float_range("directory_wait_ms", 0.0, 10000.0, d.flow.directory_wait_ms),
        answer=fl.get("answer", bool, d.flow.answer),
        menu_attempts=fl.int_range("menu_attempts", 1, 10, d.flow.menu_attempts),
        menu_timeout_ms=fl.int_range("menu_timeout_ms", 500, 60000, d.flow.menu_timeout_ms),
        fallback_budget_s=fl.float_range("fallback_budget_s", 5.0, 600.0, d.flow.fallback_budget_s),
    )
    if flow.directory_wait_ms >= flow.decision_budget_ms:
        raise fl.err("directory_wait_ms", "must be shorter than decision_budget_ms")
    fl.finish()

    s = root.table("state")
    state = StateSettings(
        backend=s.choice("backend", ("memory", "redis"), d.state.backend),
        redis_url=s.get("redis_url", str, d.state.redis_url),
        timeout_ms=s.float_range("timeout_ms", 1.0, 10000.0, d.state.timeout_ms),
    )
    s.finish()

    di = root.table("directory")
    directory = DirectorySettings(
        backend=di.choice("backend", ("sqlite", "http", "none"), d.directory.backend),
        sqlite_path=Path(di.get("sqlite_path", str, str(d.directory.sqlite_path))),
        timeout_ms=di.float_range("timeout_ms", 1.0, 10000.0, d.directory.timeout_ms),
        http_url=di.get("http_url", str, d.directory.http_url),
        http_timeout_ms=di.float_range("http_timeout_ms", 1.0, 10000.0, d.directory.http_timeout_ms),
        http_identify_by=di.choice("http_identify_by", ("pseudonym", "e164"), d.directory.http_identify_by),
        http_cache_ttl_s=di.float_range("http_cache_ttl_s", 0.0, 86400.0, d.directory.http_cache_ttl_s),
    )
    if directory.backend == "http" and not directory.http_url.startswith(("http://", "https://")):
        raise di.err("http_url", "backend = 'http' needs an http:// or https:// URL")
    di.finish()

    sm = root.table("sms")
    sms = SmsSettings(
        backend=sm.choice("backend", ("none", "http"), d.sms.backend),
        url=sm.get("url", str, d.sms.url),
        timeout_ms=sm.float_range("timeout_ms", 10.0, 60000.0, d.sms.timeout_ms),
    )
    if sms.backend == "http" and not sms.url.startswith(("http://", "https://")):
        raise sm.err("url", "backend = 'http' needs an http:// or https:// URL")
    sm.finish()

    am = root.table("ami")
    ami = AMISettings(
        enabled=am.get("enabled", bool, d.ami.enabled),
        host=am.get("host", str, d.ami.host),
        port=am.int_range("port", 1, 65535, d.ami.port),
        username=am.get("username", str, d.ami.username),
        secret=am.get("secret", str, d.ami.secret),
        secret_file=Path(am.get("secret_file", str, str(d.ami.secret_file))),
        ping_interval=am.float_range("ping_interval", 0.5, 300.0, d.ami.ping_interval),
    )
    am.finish()

    sp = root.table("speech")
    ds = d.speech
    speech = SpeechSettings(
        enabled=sp.get("enabled", bool, ds.enabled),
        model_dir=sp.get("model_dir", str, ds.model_dir),
        workers=sp.int_range("workers", 1, 16, ds.workers),
        beam_size=sp.int_range("beam_size", 1, 10, ds.beam_size),
        window_s=sp.int_range("window_s", 1, 30, ds.window_s),
        attempts=sp.int_range("attempts", 1, 5, ds.attempts),
        no_input_ms=sp.int_range("no_input_ms", 500, 30000, ds.no_input_ms),
        hangover_ms=sp.int_range("hangover_ms", 200, 3000, ds.hangover_ms),
        turn=sp.choice("turn", ("semantic", "silence"), ds.turn),
        turn_extend_ms=sp.int_range("turn_extend_ms", 0, 3000, ds.turn_extend_ms),
        aggressiveness=sp.int_range("aggressiveness", 0, 3, ds.aggressiveness),
        frame_ms=sp.int_range("frame_ms", 10, 30, ds.frame_ms),
        pre_roll_ms=sp.int_range("pre_roll_ms", 0, 2000, ds.pre_roll_ms),
        max_utterance_ms=sp.int_range("max_utterance_ms", 1000, 30000, ds.max_utterance_ms),
        lease_s=sp.float_range("lease_s", 0.5, 30.0, ds.lease_s),
        confirm=sp.get("confirm", bool, ds.confirm),
        processes=_processes(sp, ds.processes),
        batch=sp.int_range("batch", 1, 16, ds.batch),
        identify_language=sp.get("identify_language", bool, ds.identify_language),
        other_language_below=sp.float_range("other_language_below", 0.0, 1.0, ds.other_language_below),
        admit_wait_ms=sp.int_range("admit_wait_ms", 100, 60000, ds.admit_wait_ms),
        recognition_timeout_ms=sp.int_range("recognition_timeout_ms", 500, 60000, ds.recognition_timeout_ms),
        confirm_attempts=sp.int_range("confirm_attempts", 1, 3, ds.confirm_attempts),
        confirm_no_input_ms=sp.int_range("confirm_no_input_ms", 500, 30000, ds.confirm_no_input_ms),
        sounds_dir=sp.get("sounds_dir", str, ds.sounds_dir),
        rtp_port_start=sp.int_range("rtp_port_start", 1024, 65534, ds.rtp_port_start),
        rtp_port_end=sp.int_range("rtp_port_end", 1026, 65536, ds.rtp_port_end),
        bind_host=sp.get("bind_host", str, ds.bind_host),
        advertise_host=sp.get("advertise_host", str, ds.advertise_host),
        asterisk_host=sp.get("asterisk_host", str, ds.asterisk_host),
        jitter_packets=sp.int_range("jitter_packets", 0, 32, ds.jitter_packets),
    )
    if speech.rtp_port_end - speech.rtp_port_start < 4:
        raise sp.err("rtp_port_end", "the RTP port range needs at least 2 even ports")
    if 10000 <= speech.rtp_port_start < 20000 or 10000 < speech.rtp_port_end <= 20000:
        raise sp.err("rtp_port_start", "overlaps Asterisk's default rtp.conf range 10000-20000")
    if speech.frame_ms not in (10, 20, 30):
        raise sp.err("frame_ms", "webrtcvad takes 10, 20 or 30 ms frames")
    if speech.jitter_packets & (speech.jitter_packets - 1):
        raise sp.err("jitter_packets", "must be 0 or a power of 2")
    sp.finish()

    un = root.table("understanding")
    du = d.understanding
    understanding = UnderstandingSettings(
        motive_confidence=un.float_range("motive_confidence", -1.0, 1.0, du.motive_confidence),
        motive_margin=un.float_range("motive_margin", 0.0, 1.0, du.motive_margin),
        queue_confidence=un.float_range("queue_confidence", 0.0, 1.0, du.queue_confidence),
        confirm_confidence=un.float_range("confirm_confidence", 0.0, 1.0, du.confirm_confidence),
        part_queue_confidence=un.float_range("part_queue_confidence", 0.0, 1.0, du.part_queue_confidence),
    )
    un.finish()

    sa = root.table("sampling")
    dsa = d.sampling
    sampling = SamplingSettings(
        enabled=sa.get("enabled", bool, dsa.enabled),
        rate=sa.float_range("rate", 0.0, 1.0, dsa.rate),
        folder=sa.get("folder", str, dsa.folder),
        retention_days=sa.float_range("retention_days", 0.01, 3650.0, dsa.retention_days),
        max_mb=sa.float_range("max_mb", 1.0, 1_000_000.0, dsa.max_mb),
        consent_variable=sa.get("consent_variable", str, dsa.consent_variable),
    )
    sa.finish()

    ho = root.table("handoff")
    dh = d.handoff
    handoff = HandoffSettings(
        whisper=ho.choice("whisper", ("off", "on", "useful"), dh.whisper),
        headers=ho.get("headers", bool, dh.headers),
        transcript=ho.get("transcript", bool, dh.transcript),
        api=ho.get("api", bool, dh.api),
        token_file=Path(ho.get("token_file", str, str(dh.token_file))),
    )
    ho.finish()

    si = root.table("sip")
    dsip = d.sip
    sip = SipSettings(
        bind=si.get("bind", str, dsip.bind),
        tls=si.choice("tls", ("auto", "on", "off"), dsip.tls),
        tls_port=si.int_range("tls_port", 1, 65535, dsip.tls_port),
        cert_file=Path(si.get("cert_file", str, str(dsip.cert_file))),
        key_file=Path(si.get("key_file", str, str(dsip.key_file))),
        accounts_file=Path(si.get("accounts_file", str, str(dsip.accounts_file))),
        edge=si.choice("edge", ("none", "kamailio"), dsip.edge),
    )
    si.finish()

    no = root.table("node")
    dn = d.node
    routers = no.get("routers", list, list(dn.routers), what="a list of agi://host:port/3646 addresses")
    for url in routers:
        if not isinstance(url, str) or not _AGI_URL.fullmatch(url):
            raise no.err("routers", f"{url!r} is not an agi://host:port/3646 address (e.g. agi://10.0.0.11:4573/3646)")
    node = NodeSettings(
        name=no.get("name", str, dn.name),
        routers=tuple(routers),
        sip_port=no.int_range("sip_port", 1, 65535, dn.sip_port),
        rtp_start=no.int_range("rtp_start", 1024, 65534, dn.rtp_start),
        rtp_end=no.int_range("rtp_end", 1025, 65535, dn.rtp_end),
    )
    if node.rtp_end <= node.rtp_start:
        raise no.err("rtp_end", f"must be above rtp_start ({node.rtp_start}), got {node.rtp_end}")
    no.finish()

    me = root.table("metrics")
    metrics = MetricsSettings(
        enabled=me.get("enabled", bool, d.metrics.enabled),
        host=me.get("host", str, d.metrics.host),
        port=me.int_range("port", 0, 65535, d.metrics.port),
    )
    me.finish()

    lg = root.table("log")
    logs = LogSettings(
        level=lg.choice("level", ("DEBUG", "INFO", "WARNING", "ERROR"), d.log.level),
        json=lg.get("json", bool, d.log.json),
    )
    lg.finish()
    root.finish()
    return Settings(
        data_dir=data_dir,
        key_file=key_file,
        policy_file=Path(policy_file) if policy_file else None,
        candidate_policy_file=Path(candidate_file) if candidate_file else None,
        candidate_share=candidate_share,
        catalogue_file=Path(catalogue_file) if catalogue_file else None,
        audit_file=audit_file,
        audit_max_mb=audit_max_mb,
        audit_backups=audit_backups,
        agi=agi,
        flow=flow,
        state=state,
        directory=directory,
        sms=sms,
        ami=ami,
        speech=speech,
        understanding=understanding,
        sampling=sampling,
        handoff=handoff,
        sip=sip,
        node=node,
        metrics=metrics,
        log=logs,
        source=f,
    )
