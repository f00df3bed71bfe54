"""Places accepted callbacks when the skill queue has a free agent, within opening hours.

Each due callback is placed with AMI ``Originate`` (synchronous: the response says whether the caller
answered): ``Local/<number>@callback-out`` rings the caller; once they answer, the call enters
``callback-connect``, which puts them in their skill queue at the callback priority. A refused or
unanswered attempt is retried ``retry_s`` later, up to ``max_attempts``; callbacks older than
``expire_s`` expire. Nothing is placed while AMI is down or the queue data is stale.

Several PBX nodes (issue #22): each router's placer reads its own node's queues and claims callbacks in
the shared store, so a callback is placed by a node that has a free agent for its skill, once. When the
AMI connection drops during an Originate (the node died, or the link to it), the attempt does not count
and the callback is due again ``lost_retry_s`` later, for any node: not at once, because a connection that
dropped while Asterisk lived may have left the call ringing (a caller rung twice is the lesser harm, a
promise kept 5 minutes late the greater).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..ami.client import AMIClient
from ..exceptions import AMIConnectionError, AMIError
from ..policy.model import QueueSnapshot
from .store import Callback, CallbackRecords

__all__ = ["CallbackPlacer", "PlacerConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PlacerConfig:
    interval_s: float = 5.0
    max_attempts: int = 3
    retry_s: float = 300.0
    lost_retry_s: float = 30.0  # the AMI connection dropped mid-Originate: due again (any node) this much later
    expire_s: float = 4 * 3600.0
    ring_timeout_s: float = 30.0
    priority: int = 5
    out_context: str = "callback-out"
    connect_context: str = "callback-connect"


class CallbackPlacer:
    def __init__(
        self,
        store: CallbackRecords,
        ami: AMIClient,
        queue_state: Callable[[str], QueueSnapshot],
        policy_open: Callable[[datetime], bool],
        config: PlacerConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        context_variables: Callable[[str], Awaitable[dict[str, str]]] | None = None,
    ) -> None:
        self.store = store
        self.context_variables = context_variables  # the call's context for the agent (handoff/), by call id
        self.ami = ami
        self.queue_state = queue_state
        self.policy_open = policy_open
        self.config = config or PlacerConfig()
        self.clock = clock
        self.placed = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="callback-placer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("callback placer round failed")
            await asyncio.sleep(self.config.interval_s)

    async def run_once(self) -> int:
        """One round: expire old callbacks, place those whose queue can take them now. Returns how many
        were attempted."""
        now = self.clock()
        expired = self.store.expire(now - self.config.expire_s)
        if expired:
            log.warning("%d callback(s) expired before an agent was free", expired)
        if not self.ami.connected.is_set() or not self.policy_open(datetime.fromtimestamp(now, UTC)):
            return 0
        attempted = 0
        free: dict[str, int] = {}
        for cb in self.store.due(now):
            if cb.queue not in free:
                snap = self.queue_state(cb.queue)
                free[cb.queue] = snap.available_agents if snap.fresh else 0
            if free[cb.queue] <= 0 or not self.store.mark_placing(cb.id, now):
                continue
            free[cb.queue] -= 1
            attempted += 1
            await self._place(cb)
        return attempted

    async def _place(self, cb: Callback) -> None:
        cfg = self.config
        context: dict[str, str] = {}
        if self.context_variables is not None:
            try:
                context = await self.context_variables(cb.call_id)
            except Exception:  # the callback is placed without it: the agent asks
                log.exception("context of callback %d not found", cb.id)
        try:
            await self.ami.action(
                "Originate",
                [
                    ("Channel", f"Local/{cb.number}@{cfg.out_context}"),
                    ("Context", cfg.connect_context),
                    ("Exten", "s"),
                    ("Priority", "1"),
                    ("Timeout", str(int(cfg.ring_timeout_s * 1000))),
                    ("CallerID", "3646"),
                    ("Variable", f"ROUTER_QUEUE={cb.queue}"),
                    ("Variable", f"ROUTER_PRIO={cfg.priority}"),
                    ("Variable", f"CALLBACK_ID={cb.id}"),
                    *(("Variable", f"{k}={v}") for k, v in context.items()),
                    ("Async", "false"),
                ],
                timeout=cfg.ring_timeout_s + 10,
            )
        except AMIConnectionError as exc:
            self.store.mark_failed(cb.id, str(exc), retry_at=self.clock() + cfg.lost_retry_s, counted=False)
            log.warning("callback %d (%s): connection to Asterisk lost while placing (%s): due again in %.0f s "
                        "for any node", cb.id, cb.caller, exc, cfg.lost_retry_s)  # fmt: skip
            return
        except AMIError as exc:
            attempts = cb.attempts + 1
            retry = self.clock() + cfg.retry_s if attempts < cfg.max_attempts else None
            self.store.mark_failed(cb.id, str(exc), retry_at=retry)
            if retry is None:
                self.failed += 1
            log.info("callback %d (%s) attempt %d failed: %s", cb.id, cb.caller, attempts, exc)
            return
        self.store.mark_placed(cb.id)
        self.placed += 1
        log.info("callback %d (%s) placed into %s", cb.id, cb.caller, cb.queue)
