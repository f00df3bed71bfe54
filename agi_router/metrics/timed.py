"""Timing wrappers for the router's dependencies: same interface, plus latency and error metrics.

They wrap whatever backend the settings chose (SQLite or HTTP directory, in-process or Redis
memory, HTTP SMS gateway) so that no backend knows about Prometheus, and a new backend is
measured the day it is plugged in.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from ..directory.base import AccountDirectory
from ..exceptions import DirectoryError, StateStoreError
from ..policy.model import AccountFacts, PastCall
from ..sms import SmsError, SmsSender
from ..state.base import CallerMemory
from .instruments import RouterMetrics

__all__ = ["TimedDirectory", "TimedMemory", "TimedSms"]


class TimedDirectory:
    def __init__(self, inner: AccountDirectory, metrics: RouterMetrics, backend: str) -> None:
        self.inner = inner
        self._seconds = metrics.directory_seconds.labels(backend)
        self._errors = metrics.directory_errors.labels(backend)

    async def lookup(self, e164: str | None, pseudonym: str) -> AccountFacts:
        t = time.perf_counter()
        try:
            return await self.inner.lookup(e164, pseudonym)
        except DirectoryError:
            self._errors.inc()
            raise
        finally:
            # a lookup cancelled at the end of the call counts with the time it had run: a slow directory shows
            self._seconds.observe(time.perf_counter() - t)

    async def close(self) -> None:
        await self.inner.close()


class TimedMemory:
    def __init__(self, inner: CallerMemory, metrics: RouterMetrics, backend: str) -> None:
        self.inner = inner
        m = metrics
        self._h = (m.state_seconds.labels(backend, "history"), m.state_errors.labels(backend, "history"))
        self._r = (m.state_seconds.labels(backend, "record"), m.state_errors.labels(backend, "record"))

    async def history(self, caller: str, motive: str, now: datetime) -> tuple[PastCall, ...]:
        seconds, errors = self._h
        t = time.perf_counter()
        try:
            return await self.inner.history(caller, motive, now)
        except StateStoreError:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - t)

    async def record(self, caller: str, motive: str, call: PastCall, ttl: timedelta) -> None:
        seconds, errors = self._r
        t = time.perf_counter()
        try:
            await self.inner.record(caller, motive, call, ttl)
        except StateStoreError:
            errors.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - t)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


class TimedSms:
    def __init__(self, inner: SmsSender, metrics: RouterMetrics) -> None:
        self.inner = inner
        self._sent = metrics.sms.labels("sent")
        self._failed = metrics.sms.labels("failed")

    async def send(self, e164: str, text: str, *, reference: str) -> None:
        try:
            await self.inner.send(e164, text, reference=reference)
        except SmsError:
            self._failed.inc()
            raise
        self._sent.inc()

    async def close(self) -> None:
        await self.inner.close()
