"""Watching a real stack from outside during a SIPp load test: Asterisk's AMI and the router's /metrics.

* :class:`AmiWatch` logs in to AMI (read-only use) and keeps, per caller channel, when it appeared
  (``Newchannel``), its caller number, the router's decision (``UserEvent(RouterRoute)`` of the dialplan),
  whether an agent answered (``AgentConnect``) and when it hung up (``Hangup``);
* :class:`MetricsWatch` scrapes the router's ``/metrics`` once a second: recogniser load, admissions
  refused, the router's RSS and open file descriptors, and the ``speech_to_route_seconds`` histogram, from
  which :func:`histogram_quantile` gives the p99 (as Prometheus would: the bucket's upper bound).

Both are daemon threads with explicit timeouts; a watcher that cannot connect records why and the run goes
on (its report then says what it could not see).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from agi_router.ami.protocol import MessageParser, encode_action
from agi_router.exceptions import AMIProtocolError

from .report import Sample

__all__ = ["AmiWatch", "ChannelSeen", "MetricsWatch", "histogram_count", "histogram_quantile"]


@dataclass
class ChannelSeen:
    uniqueid: str
    number: str
    started: float
    route: dict[str, str] = field(default_factory=dict)
    routed_at: float | None = None
    answered_by_agent: bool = False
    ended: float | None = None


class AmiWatch(threading.Thread):
    """Caller channels whose name starts with ``prefix`` (``PJSIP/sipp-``: the SIPp trunk endpoint)."""

    def __init__(self, host: str, port: int, user: str, secret: str, prefix: str = "PJSIP/sipp-") -> None:
        super().__init__(daemon=True, name="ami-watch")
        self.addr = (host, port)
        self.user, self.secret, self.prefix = user, secret, prefix
        self.calls: dict[str, ChannelSeen] = {}
        self.error = ""
        self.ready = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            with socket.create_connection(self.addr, timeout=5) as sock:
                sock.settimeout(0.5)
                sock.sendall(encode_action("Login", {"Username": self.user, "Secret": self.secret, "ActionID": "w"}))
                parser = MessageParser()  # the router's own AMI framing (banner, CRLF or LF, size limit)
                while not self._halt.is_set():
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        self.error = self.error or "AMI closed the connection"
                        return
                    for msg in parser.feed(chunk):
                        first: dict[str, str] = {}
                        for k, v in msg.pairs:
                            first.setdefault(k, v)
                        self._on(first)
        except (OSError, AMIProtocolError) as exc:
            self.error = f"AMI {self.addr[0]}:{self.addr[1]}: {exc}"
            self.ready.set()

    def _on(self, m: dict[str, str]) -> None:
        now = time.monotonic()
        if m.get("ActionID") == "w" and "Response" in m:
            if m["Response"] != "Success":
                self.error = f"AMI login refused: {m.get('Message', '')}"
            self.ready.set()
            return
        ev, uid = m.get("Event", ""), m.get("Uniqueid", "")
        with self._lock:
            if ev == "Newchannel" and m.get("Channel", "").startswith(self.prefix):
                self.calls[uid] = ChannelSeen(uid, m.get("CallerIDNum", ""), now)
            elif uid not in self.calls:
                return
            elif ev == "UserEvent" and m.get("UserEvent") == "RouterRoute":
                self.calls[uid].route, self.calls[uid].routed_at = m, now
            elif ev == "AgentConnect":
                self.calls[uid].answered_by_agent = True
            elif ev == "Hangup":
                self.calls[uid].ended = now

    def snapshot(self) -> list[ChannelSeen]:
        with self._lock:
            return list(self.calls.values())

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


def _parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def histogram_count(first: dict[str, float], last: dict[str, float], name: str) -> int:
    """Observations of histogram ``name`` between two scrapes (its ``_count``, the +Inf bucket)."""
    key = name + "_count"
    return round(last.get(key, 0.0) - first.get(key, 0.0))


def histogram_quantile(first: dict[str, float], last: dict[str, float], name: str, q: float) -> float | None:
    """The q-quantile (0..1) of histogram ``name`` between two scrapes: the upper bound of the bucket it
    falls in (inf: above the last bound); None without observations."""
    buckets = []
    for key, value in last.items():
        if key.startswith(name + "_bucket{") and 'le="' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), value - first.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


class MetricsWatch(threading.Thread):
    def __init__(self, url: str, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="metrics-watch")
        self.url, self.interval_s = url, interval_s
        self.samples: list[Sample] = []
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.error = ""
        self._halt = threading.Event()

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url, timeout=2) as r:
            return _parse(r.read().decode())

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                m = self.scrape()
            except OSError as exc:
                self.error = f"{self.url}: {exc}"
            else:
                self.first = self.first or m
                self.last = m
                p = "agi_router_"
                self.samples.append(
                    Sample(
                        time.monotonic(),
                        m.get(p + "process_resident_memory_bytes", 0.0) / 2**20,
                        int(m.get(p + "process_open_fds", 0.0)),
                        m.get(p + "recognizer_inflight", 0.0),
                        m.get(p + "recognizer_busy_seconds_total", 0.0),
                        m.get(p + "recognizer_workers", 1.0),
                        m.get(p + "speech_admission_refused_total", 0.0),
                    )
                )
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(3)
