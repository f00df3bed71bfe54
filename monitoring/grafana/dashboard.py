"""The agi-router Grafana dashboard, as code: ``python monitoring/grafana/dashboard.py`` rewrites
``dashboards/agi-router.json`` (provisioned by ``provisioning/dashboards/agi-router.yml``).

CI checks that the committed JSON is what this script writes and that every query names metrics
the router exports (tests/test_monitoring.py). Rows answer, top to bottom: how many callers did we
send away, hang up on, or connect (traffic, decisions), how fast (latency), did we understand them
(speech), what waits for them (queues, callbacks), is the router healthy (health).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "prometheus"}
OUT = Path(__file__).parent / "dashboards" / "agi-router.json"
RANGE = "$__rate_interval"

Panel = dict[str, Any]


class Layout:
    def __init__(self) -> None:
        self.panels: list[Panel] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {"type": "row", "title": title, "id": self._id(), "collapsed": False, "gridPos": _pos(0, self.y, 24, 1)}
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0

    def add(self, panel: Panel, w: int, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = _pos(self.x, self.y, w, h)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def _pos(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def _targets(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str,
    queries: list[tuple[str, str]],
    unit: str = "short",
    *,
    stack: bool = False,
    description: str = "",
    thresholds: list[tuple[float, str]] | None = None,
) -> Panel:
    custom: dict[str, Any] = {"lineWidth": 1, "fillOpacity": 20 if stack else 5}
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
        custom["thresholdsStyle"] = {"mode": "line"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}},
    }


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    *,
    thresholds: list[tuple[float, str]] | None = None,
    description: str = "",
    legend: str = "",
    text_mode: str = "value",
) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": _targets([(expr, legend)]),
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": _thresholds(thresholds or [(0, "green")])},
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"]},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": text_mode,
        },
    }


def _thresholds(steps: list[tuple[float, str]]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": None if i == 0 else v} for i, (v, color) in enumerate(steps)],
    }


def quantiles(metric: str, by: str = "") -> list[tuple[str, str]]:
    grp = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({grp}) (rate({metric}_bucket[{RANGE}])))", f"p{int(q * 100)}{suffix}")
        for q in (0.5, 0.9, 0.99)
    ]


def build() -> dict[str, Any]:
    lay = Layout()
    decided = f"sum(rate(agi_router_decisions_total[{RANGE}]))"

    lay.row("Traffic")
    lay.add(stat("Calls / min", "sum(rate(agi_router_calls_total[5m])) * 60", "short"), 4, 5)
    lay.add(
        stat(
            "Sent away (15 min)",
            "agi_router:exclusion_share:rate15m",
            "percentunit",
            thresholds=[(0, "green"), (0.3, "orange"), (0.5, "red")],
            description="Share of decided calls the router ended itself: deflection to the online account + repeat"
            " hang-up.",
        ),
        4,
        5,
    )
    lay.add(
        stat(
            "Connected to an agent (15 min)",
            'sum(rate(agi_router_decisions_total{action=~"queue|priority"}[15m]))'
            " / sum(rate(agi_router_decisions_total[15m]))",
            "percentunit",
        ),
        4,
        5,
    )
    lay.add(stat("AGI sessions now", "sum(agi_router_agi_sessions_active)", "short"), 4, 5)
    lay.add(stat("Live-audio legs now", "sum(agi_router_media_streams_active)", "short"), 4, 5)
    lay.add(
        stat(
            "Fallback to a human (15 min)",
            "sum(increase(agi_router_fallbacks_total[15m]))",
            "short",
            thresholds=[(0, "green"), (1, "orange"), (20, "red")],
        ),
        4,
        5,
    )
    lay.add(
        timeseries(
            "Calls by result",
            [(f"sum by (result) (rate(agi_router_calls_total[{RANGE}])) * 60", "{{result}}")],
            "cpm",
            stack=True,
        ),
        12,
    )
    lay.add(
        timeseries(
            "How the motive was captured",
            [(f"sum by (method) (rate(agi_router_motive_captures_total[{RANGE}])) * 60", "{{method}}")],
            "cpm",
            stack=True,
        ),
        12,
    )

    lay.row("Decisions")
    lay.add(
        timeseries(
            "Decisions by action",
            [(f"sum by (action) (rate(agi_router_decisions_total[{RANGE}])) * 60", "{{action}}")],
            "cpm",
            stack=True,
            description="deflect: voice message to the online account, hang up; hangup: repeat call hung up on;"
            " priority: agent with priority; queue: skill queue; dissuade/callback: saturated queue.",
        ),
        12,
    )
    lay.add(
        timeseries(
            "Share of each action",
            [
                (
                    f"sum by (action) (rate(agi_router_decisions_total[{RANGE}]))"
                    f" / ignoring(action) group_left {decided}",
                    "{{action}}",
                )
            ],
            "percentunit",
            stack=True,
        ),
        12,
    )
    lay.add(
        timeseries(
            "Sent away, by caller segment (1 h)",
            [
                ("agi_router:exclusion_share_by_segment:rate1h", "{{segment}}"),
                ("agi_router:exclusion_share_by_cohort:rate1h", "cohort {{cohort}}"),
            ],
            "percentunit",
            description="Exclusion metrics: deflected or hung up on, per account segment and per cohort (fragile "
            "flag, DTMF fallback, capture failed, other language, repeat caller). No per-caller label exists.",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Reached a person, by caller segment (1 h)",
            [
                ("agi_router:person_share_by_segment:rate1h", "{{segment}}"),
                ("agi_router:person_share_by_cohort:rate1h", "cohort {{cohort}}"),
            ],
            "percentunit",
            description="Queued, priority or dissuaded-then-queued, per account segment (alert: a segment's "
            "exclusion share 1.5x yesterday's).",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Safeguards that changed a decision",
            [(f"sum by (safeguard) (rate(agi_router_safeguard_triggers_total[{RANGE}])) * 60", "{{safeguard}}")],
            "cpm",
            stack=True,
            description="Router-ended calls a safeguard of the policy sent to a person instead, by safeguard.",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Decisions by queue",
            [(f'sum by (queue) (rate(agi_router_decisions_total{{queue!=""}}[{RANGE}])) * 60', "{{queue}}")],
            "cpm",
            stack=True,
        ),
        8,
    )
    lay.add(
        timeseries(
            "Repeat hang-ups, priority promotions, safeguards",
            [
                (f"sum(rate(agi_router_repeat_hangups_total[{RANGE}])) * 60", "repeat hang-ups"),
                (f"sum(rate(agi_router_priority_promotions_total[{RANGE}])) * 60", "priority promotions"),
                (
                    f"sum by (safeguard) (rate(agi_router_safeguard_triggers_total[{RANGE}])) * 60",
                    "safeguard {{safeguard}}",
                ),
                (
                    f"sum by (reason) (rate(agi_router_deflections_skipped_total[{RANGE}])) * 60",
                    "not deflected: {{reason}}",
                ),
            ],
            "cpm",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Top motives",
            [(f"topk(10, sum by (motive) (rate(agi_router_decisions_total[{RANGE}])) * 60)", "{{motive}}")],
            "cpm",
        ),
        12,
    )
    lay.add(
        timeseries(
            "Rules that decided",
            [(f"sum by (rule) (rate(agi_router_policy_rules_total[{RANGE}])) * 60", "{{rule}}")],
            "cpm",
            stack=True,
        ),
        12,
    )

    budget = [(0, "green"), (0.1, "red")]
    lay.row("Latency")
    lay.add(
        timeseries(
            "Decision latency (motive known -> decision)",
            quantiles("agi_router_decision_seconds"),
            "s",
            thresholds=budget,
        ),
        8,
    )
    lay.add(
        timeseries(
            "End of speech -> routing written",
            quantiles("agi_router_speech_to_route_seconds"),
            "s",
            thresholds=budget,
        ),
        8,
    )
    lay.add(
        timeseries(
            "Calls decided within 100 ms",
            [
                (
                    f'sum(rate(agi_router_decision_seconds_bucket{{le="0.1"}}[{RANGE}]))'
                    f" / sum(rate(agi_router_decision_seconds_count[{RANGE}]))",
                    "decision",
                ),
                (
                    f'sum(rate(agi_router_speech_to_route_seconds_bucket{{le="0.1"}}[{RANGE}]))'
                    f" / sum(rate(agi_router_speech_to_route_seconds_count[{RANGE}]))",
                    "end of speech -> route",
                ),
            ],
            "percentunit",
        ),
        8,
    )
    lay.add(timeseries("Directory lookups", quantiles("agi_router_directory_lookup_seconds", "backend"), "s"), 12)
    lay.add(timeseries("Caller memory (state store)", quantiles("agi_router_state_store_seconds", "op"), "s"), 12)

    lay.row("Speech")
    lay.add(
        timeseries(
            "Speech rounds by outcome",
            [(f"sum by (outcome) (rate(agi_router_speech_rounds_total[{RANGE}])) * 60", "{{outcome}}")],
            "cpm",
            stack=True,
            description="no_input: silence after the prompt; no_match: not understood (re-prompt, then DTMF menu); "
            "to_confirm: unsure, asked 'Vous appelez pour X ?'; confirm_yes / confirm_no: the answers.",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Recogniser load",
            [
                ("sum(agi_router_recognizer_inflight)", "utterances in flight"),
                (
                    f"sum(rate(agi_router_recognizer_busy_seconds_total[{RANGE}]))"
                    " / sum(agi_router_recognizer_workers)",
                    "busy share",
                ),
                ("max(agi_router_recognizer_expected_seconds)", "a new utterance would take (s)"),
                (f"sum(rate(agi_router_speech_admission_refused_total[{RANGE}])) * 60", "refused -> DTMF menu /min"),
            ],
            "short",
            description="Admission: a speech round starts only if recognition would answer within "
            "[speech] admit_wait_ms; otherwise the caller gets the DTMF menu at once.",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Spoken motive: what the router acted on",
            [(f"sum by (level) (rate(agi_router_speech_understanding_total[{RANGE}])) * 60", "{{level}}")],
            "cpm",
            stack=True,
            description="deflectable: the exact motive was sure (only these can be deflected); queue: only its "
            "skill was (routed to the skill queue); several: several requests heard; person: asked for one; "
            "confirmed: after a yes to the confirmation question.",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Recognition and end-of-speech delay",
            [
                *quantiles("agi_router_recognition_seconds")[1:],
                *[(e, "end of speech " + lg) for e, lg in quantiles("agi_router_end_of_speech_delay_seconds")[1:]],
            ],
            "s",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Motive confidence (median, p10)",
            [
                (f"histogram_quantile(0.5, sum by (le) (rate(agi_router_motive_confidence_bucket[{RANGE}])))", "p50"),
                (f"histogram_quantile(0.1, sum by (le) (rate(agi_router_motive_confidence_bucket[{RANGE}])))", "p10"),
            ],
            "percentunit",
        ),
        8,
    )
    lay.add(
        timeseries(
            "DTMF fallbacks and recogniser errors",
            [
                (f"sum(rate(agi_router_dtmf_fallbacks_total[{RANGE}])) * 60", "speech -> DTMF menu"),
                (f"sum(rate(agi_router_recognizer_errors_total[{RANGE}])) * 60", "recogniser errors"),
            ],
            "cpm",
        ),
        8,
    )
    lay.add(
        timeseries(
            "RTP packets",
            [
                (f"sum by (direction) (rate(agi_router_rtp_packets_total[{RANGE}]))", "{{direction}}"),
                (f"sum(rate(agi_router_rtp_lost_packets_total[{RANGE}]))", "lost"),
                (f"sum by (reason) (rate(agi_router_rtp_dropped_packets_total[{RANGE}]))", "dropped {{reason}}"),
            ],
            "pps",
        ),
        8,
    )
    lay.add(
        timeseries(
            "RTP jitter, VAD",
            [
                *quantiles("agi_router_rtp_jitter_seconds")[1:],
                (
                    f"sum(rate(agi_router_vad_voiced_frames_total[{RANGE}])) / sum(rate(agi_router_vad_frames_total"
                    f"[{RANGE}]))",
                    "voiced frame share",
                ),
            ],
            "s",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Caller's last word -> route (the wait the caller feels)",
            quantiles("agi_router_voice_to_route_seconds"),
            "s",
            description="End of turn (the silence hangover) + recognition + decision, from the last voiced audio "
            "of the sentence acted on. A person answers in ~0.2-0.3 s; voice platforms wait 0.5-0.8 s.",
        ),
        8,
    )

    lay.row("Queues")
    lay.add(timeseries("Callers waiting", [("sum by (queue) (agi_router_queue_callers_waiting)", "{{queue}}")]), 8)
    lay.add(timeseries("Agents available", [("sum by (queue) (agi_router_queue_agents_available)", "{{queue}}")]), 8)
    # No agent logged in is not saturation: the router sends skill callers to the reception queue (rule
    # queue.unstaffed); with nobody there either, Asterisk answers JOINUNAVAIL and the dialplan says
    # "router/queue-unavailable" and hangs up (alert AgiRouterNoAgentLoggedIn).
    lay.add(
        timeseries(
            "Agents logged in (0 on accueil = callers hung up)",
            [("sum by (queue) (agi_router_queue_agents_logged_in)", "{{queue}}")],
        ),
        8,
    )
    lay.add(
        timeseries(
            "Rerouted: skill queue with nobody logged in",
            [(f'sum(rate(agi_router_policy_rules_total{{rule="queue.unstaffed"}}[{RANGE}])) * 60', "to accueil")],
            "cpm",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Longest wait",
            [("max by (queue) (agi_router_queue_longest_wait_seconds)", "{{queue}}")],
            "s",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Dissuaded (saturated queue)",
            [
                (
                    f'sum by (queue) (rate(agi_router_decisions_total{{action=~"dissuade|callback"}}[{RANGE}])) * 60',
                    "{{queue}}",
                )
            ],
            "cpm",
            stack=True,
        ),
        12,
    )
    lay.add(
        timeseries(
            "Estimated wait of a newcomer",
            [("max by (queue) (agi_router_queue_estimated_wait_seconds)", "{{queue}}")],
            "s",
        ),
        12,
    )

    # the agents' view of the routing (handoff/): callers moved with *7, and the share they kept
    lay.add(
        timeseries(
            "Routing confirmed by agents (answered calls not moved)",
            [
                ("agi_router:routing_confirmed_share_by_queue:rate1h", "{{queue}}"),
                ("agi_router:routing_confirmed_share:rate1h", "{{queue}} by {{method}}"),
            ],
            "percentunit",
            description="1 - corrections / answered calls, per queue and per capture method (speech, dtmf, "
            "variable); alert AgiRouterRoutingConfirmedDrop.",
        ),
        12,
    )
    lay.add(
        timeseries(
            "Agents' corrections (from -> to)",
            [
                (
                    f"sum by (from_queue, to_queue) (rate(agi_router_agent_corrections_total[{RANGE}])) * 3600",
                    "{{from_queue}} -> {{to_queue}}",
                )
            ],
            "short",
            stack=True,
        ),
        12,
    )

    lay.row("SIP edge")
    lay.add(
        timeseries(
            "SIP edge: refused requests",
            [
                (
                    f"sum by (event) (rate(agi_router_sip_security_events_total[{RANGE}]))",
                    "{{event}}",
                )
            ],
            "reqps",
            stack=True,
            description="Asterisk's security events (failed authentication, unknown account, ACL, bad request, "
            "limits), read over AMI; alert AgiRouterSipAttack. The Kamailio edge bans the sources.",
        ),
        24,
    )

    lay.row("PBX nodes")
    by_node = " * on (instance) group_left (node) agi_router_node_info"
    node_help = "Several Asterisk nodes behind the SIP dispatcher (edge/dispatcher.cfg): each router says its node."
    lay.add(
        timeseries(
            "Calls by node",
            [(f"sum by (node) (rate(agi_router_calls_total[{RANGE}]){by_node}) * 60", "{{node}}")],
            "cpm",
            description=node_help + " A node that stops taking calls while the others go on: the dispatcher "
            "took it out (DS-DOWN in its log).",
        ),
        8,
    )
    lay.add(
        timeseries(
            "AMI connected by node",
            [(f"max by (node) (agi_router_ami_up{by_node})", "{{node}}")],
            "short",
            description=node_help + " 0: the node's Asterisk is gone or unreachable (alert AgiRouterAMIDown).",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Callers waiting by node",
            [(f"sum by (node) (max by (node, queue) (agi_router_queue_callers_waiting{by_node}))", "{{node}}")],
            "short",
            description=node_help + " Queues are per node: agents are homed on one node (edge/README.md).",
        ),
        8,
    )

    lay.row("Callbacks")
    lay.add(stat("Callbacks pending", "sum(agi_router_callbacks_pending)", thresholds=[(0, "green"), (50, "red")]), 6)
    lay.add(
        timeseries(
            "Callback offers",
            [(f"sum by (answer) (rate(agi_router_callback_offers_total[{RANGE}])) * 60", "{{answer}}")],
            "cpm",
            stack=True,
        ),
        9,
    )
    lay.add(
        timeseries(
            "Callbacks placed / given up",
            [
                (f"sum(rate(agi_router_callbacks_placed_total[{RANGE}])) * 60", "placed"),
                (f"sum(rate(agi_router_callbacks_failed_total[{RANGE}])) * 60", "given up"),
            ],
            "cpm",
        ),
        9,
    )

    lay.row("Health")
    lay.add(stat("Routers up", 'sum(up{job="agi-router"})', thresholds=[(0, "red"), (1, "green")]), 4, 5)
    lay.add(stat("AMI connected", "min(agi_router_ami_up)", thresholds=[(0, "red"), (1, "green")]), 4, 5)
    lay.add(stat("Queue state fresh", "min(agi_router_queue_state_fresh)", thresholds=[(0, "red"), (1, "green")]), 4, 5)
    lay.add(stat("RTP ports free", "min(agi_router_rtp_ports_free)", thresholds=[(0, "red"), (20, "green")]), 4, 5)
    lay.add(
        stat(
            "Policy in force",
            "max by (version) (agi_router_policy_info)",
            legend="{{version}}",
            text_mode="name",
            description="Version label of the policy file each router runs (reloaded on SIGHUP).",
        ),
        8,
        5,
    )
    lay.add(
        timeseries(
            "AGI errors by kind",
            [(f"sum by (kind) (rate(agi_router_agi_errors_total[{RANGE}])) * 60", "{{kind}}")],
            "cpm",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Fallbacks and deadlines",
            [
                (f"sum by (reason) (rate(agi_router_fallbacks_total[{RANGE}])) * 60", "fallback {{reason}}"),
                (f"sum by (budget) (rate(agi_router_deadline_hits_total[{RANGE}])) * 60", "deadline {{budget}}"),
            ],
            "cpm",
        ),
        8,
    )
    lay.add(
        timeseries(
            "Dependency errors",
            [
                (f"sum by (backend) (rate(agi_router_directory_errors_total[{RANGE}])) * 60", "directory {{backend}}"),
                (f"sum by (op) (rate(agi_router_state_store_errors_total[{RANGE}])) * 60", "state {{op}}"),
                (f"sum by (result) (rate(agi_router_sms_total[{RANGE}])) * 60", "sms {{result}}"),
                (f"sum by (source) (rate(agi_router_call_errors_total[{RANGE}])) * 60", "degraded call {{source}}"),
            ],
            "cpm",
        ),
        8,
    )
    lay.add(
        timeseries(
            "AMI",
            [
                ("sum(agi_router_ami_up)", "connected"),
                (f"sum(rate(agi_router_ami_events_total[{RANGE}]))", "events/s"),
                ("sum(increase(agi_router_ami_reconnects_total[1h]))", "reconnects (1 h)"),
            ],
        ),
        12,
    )
    lay.add(
        timeseries(
            "Router uptime",
            [("time() - agi_router_start_time_seconds", "{{instance}}")],
            "s",
        ),
        12,
    )

    return {
        "uid": "agi-router",
        "title": "agi-router: 3646 hotline",
        "description": "Who the router sent away, hung up on or connected, how fast, and whether it is healthy.",
        "tags": ["agi-router", "asterisk", "3646"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": lay.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
