"""Wiring: build the router's components from settings, serve, reload the policy on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import suppress
from dataclasses import dataclass

from .agi.server import AGIServer, AGIServerConfig
from .callflow.capture import ChainedCapture, DTMFMenuCapture, DTMFMenuConfig, HintCapture
from .callflow.flow import CallFlow, CallFlowConfig, PolicyHolder
from .config import Settings
from .directory.base import AccountDirectory
from .directory.http import HTTPDirectory
from .directory.sqlite import SQLiteDirectory
from .exceptions import ConfigError, DirectoryError
from .motives.catalogue import Catalogue
from .policy.config import load_policy
from .policy.model import AccountFacts
from .privacy import Pseudonymizer, load_or_create_key
from .sms import HTTPSmsGateway, NoSms, SmsSender
from .state.base import CallerMemory
from .state.memory import InMemoryCallerMemory
from .state.redis import RedisCallerMemory

__all__ = ["NoDirectory", "Router", "build_router", "make_pseudonymizer", "run"]

log = logging.getLogger(__name__)

HOTLINE_SCRIPT = "3646"


class NoDirectory:
    """``backend = "none"``: every caller's account status is unknown (never deflected)."""

    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        raise DirectoryError("no directory configured")

    async def close(self) -> None:
        return None


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

    def reload_policy(self) -> bool:
        """Load the policy file again; a file that fails validation never replaces the running one."""
        try:
            new = load_policy(self.settings.policy_file, catalogue=self.catalogue)
        except ConfigError as exc:
            log.error("policy reload refused, keeping %s: %s", self.policy.current.label, exc)
            return False
        old = self.policy.current.label
        self.policy.replace(new)
        log.info("policy reloaded: %s -> %s", old, new.label)
        return True

    async def close(self) -> None:
        await self.server.close()
        await self.flow.drain()
        await self.directory.close()
        await self.memory.close()
        await self.flow.sms.close()


def build_router(settings: Settings) -> Router:
    catalogue = Catalogue.load(settings.catalogue_file)
    policy = PolicyHolder(load_policy(settings.policy_file, catalogue=catalogue))
    pseudo = make_pseudonymizer(settings)
    ds = settings.directory
    directory: AccountDirectory
    if ds.backend == "sqlite":
        directory = SQLiteDirectory(settings.path(ds.sqlite_path), pseudo, timeout=ds.timeout_ms / 1000)
    elif ds.backend == "http":
        directory = HTTPDirectory(
            ds.http_url,
            timeout=ds.http_timeout_ms / 1000,
            identify_by=ds.http_identify_by,  # type: ignore[arg-type]
            cache_ttl=ds.http_cache_ttl_s,
        )
    else:
        directory = NoDirectory()
    memory: CallerMemory
    if settings.state.backend == "redis":
        memory = RedisCallerMemory(settings.state.redis_url, timeout=settings.state.timeout_ms / 1000)
    else:
        memory = InMemoryCallerMemory()
    sms: SmsSender = (
        HTTPSmsGateway(settings.sms.url, timeout=settings.sms.timeout_ms / 1000)
        if settings.sms.backend == "http"
        else NoSms()
    )
    fs = settings.flow
    capture = ChainedCapture(
        [
            HintCapture(),
            DTMFMenuCapture(catalogue, DTMFMenuConfig(attempts=fs.menu_attempts, timeout_ms=fs.menu_timeout_ms)),
        ]
    )
    flow = CallFlow(
        policy=policy,
        directory=directory,
        memory=memory,
        pseudonymizer=pseudo,
        capture=capture,
        config=CallFlowConfig(
            call_deadline=fs.call_deadline,
            decision_budget=fs.decision_budget_ms / 1000,
            directory_wait=fs.directory_wait_ms / 1000,
            answer=fs.answer,
        ),
        sms=sms,
    )
    a = settings.agi
    server = AGIServer(
        {HOTLINE_SCRIPT: flow},
        AGIServerConfig(
            host=a.host,
            port=a.port,
            max_sessions=a.max_sessions,
            header_timeout=a.header_timeout,
            command_timeout=a.command_timeout,
        ),
    )
    return Router(settings, catalogue, policy, server, flow, directory, memory)


async def run(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    router = build_router(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await router.server.start()
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
        await router.close()
