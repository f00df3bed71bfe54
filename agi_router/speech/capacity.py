"""Recogniser capacity: how busy it is, admission of new speaking callers, and worker processes.

The recogniser, not the decision core, sets how many speaking callers one router serves (~150-400 ms of
CPU per utterance against ~0.3 ms for a whole FastAGI session). When it saturates, every caller's wait
grows together (measured through a real Asterisk: end of speech → route from ~2 ms to 2.8 s median in a
50-call burst with one worker). So:

* :class:`RecognizerLoad` counts the utterances in flight (speculative decodes included: they cost the
  same) and keeps a moving average of the decode time; ``expected_s()`` is how long a new utterance would
  take from now, its own decode included.
* **Admission**: before a speech round starts, the capture asks ``expected_s()``; over the budget
  (``[speech] admit_wait_ms``), the caller skips speech and gets the DTMF menu at once (counted as
  ``agi_router_speech_admission_refused_total``, alerted) instead of every caller waiting.
* :class:`ProcessRecognizer`: the same Whisper decode in ``processes`` worker processes (``[speech]
  processes``), each with one CTranslate2 thread and BLAS/OpenMP pools pinned to one thread (they only
  spin otherwise): two processes decode ~2x what one does on two cores, where two threads of one process
  contend for the interpreter between decodes. The model is loaded in each process (≈170 MB each).
* Both recognisers micro-batch (``[speech] batch``, :mod:`~agi_router.speech.batching`): the load gauge
  counts ``workers x batch`` utterances per round, and a pass's time once in the busy total.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .batching import MicroBatcher
from .load import RecognizerLoad
from .recognizer import SAMPLE_RATE, Transcript, WhisperRecognizer, timed_batch

__all__ = ["PINNED_THREADS", "ProcessRecognizer", "RecognizerLoad", "auto_processes", "usable_cpus"]

Pcm = npt.NDArray[np.int16]

#: thread pools that only spin around a one-thread decode (measured: OpenBLAS alone kept 1.7 cores busy)
PINNED_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# ------------------------------------------------------------------------------------------ sizing ("auto")

WORKER_MB = 250  # a worker's resident memory with the Whisper base model loaded (measured ~175 MB) + margin
MAX_AUTO_PROCESSES = 8


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        per = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if q <= 0 else q / per
    except (OSError, ValueError):
        return None


def _available_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cpus() -> tuple[int, str]:
    """The CPUs this process may use: its affinity mask, lowered by a cgroup quota; and how that was found."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        affinity = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None and quota < affinity:
        return max(1, math.floor(quota)), f"cgroup quota {quota:g} CPUs of {affinity} in the affinity mask"
    return affinity, f"{affinity} CPUs in the affinity mask" + ("" if quota is None else f", quota {quota:g}")


def auto_processes() -> tuple[int, str]:
    """``[speech] processes = "auto"``: one worker process per usable CPU (two processes decode ~2x what one
    does on two cores, batching on top; measured in benchmarks/bench_recognizer_capacity.py), at most
    MAX_AUTO_PROCESSES and what the available memory holds; 0 (threads in the router) on one CPU, where a
    second process only competes with the event loop. Returns the count and the reason, for the log."""
    cpus, why = usable_cpus()
    if cpus < 2:
        return 0, f"{why}: one CPU, decoding in the router's own thread"
    n = min(cpus, MAX_AUTO_PROCESSES)
    mem = _available_mb()
    if mem is not None and n * WORKER_MB > mem * 0.8:
        n = max(1, int(mem * 0.8 // WORKER_MB))
        why += f", memory for {n} ({mem:.0f} MB available)"
    return n, why


# ---------------------------------------------------------------------------------------- worker processes

_WORKER: WhisperRecognizer | None = None
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    """Make the kernel kill this worker when the router dies, however it dies (SIGKILL included): a router
    killed outside a cgroup-killing supervisor left its workers (~175 MB each) and, through their inherited
    pipe, multiprocessing's resource tracker running as orphans (measured: still there 30 s later)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the router died before the line above: nobody would reap us
        os._exit(0)


def _init_worker(
    model_dir: str,
    beam_size: int,
    window_s: float,
    language: str | None,
    ready: Any,
    identify: dict[str, Any],
    parent: int,
) -> None:
    """Die with the router; load the model in this worker process, then wait for the others (a barrier)."""
    global _WORKER
    _die_with(parent)
    _WORKER = WhisperRecognizer(Path(model_dir), workers=1, cpu_threads=1, beam_size=beam_size, window_s=window_s,
                                language=language, **identify)  # fmt: skip
    ready.wait(120)  # every worker has its model before the first caller is served


def _decode_in_worker(batch: list[Pcm]) -> list[tuple[str, str, float, float, float, float]]:
    assert _WORKER is not None, "worker not initialised"
    return timed_batch(_WORKER, batch)


def _ping() -> int:
    return os.getpid()


class ProcessRecognizer:
    """:class:`~agi_router.speech.recognizer.WhisperRecognizer`'s decode in ``processes`` worker processes
    (spawned: no fork of a running event loop). Construction starts them and waits until each has loaded
    the model; a worker that dies is replaced by the pool on the next job (that utterance raises, and the
    caller gets the DTMF menu)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        processes: int = 2,
        beam_size: int = 1,
        window_s: float = 6.0,
        language: str | None = "fr",
        batch: int = 1,
        detect_language: bool = True,
        other_language_below: float = 0.5,
    ) -> None:
        if processes < 1 or batch < 1:
            raise ValueError("processes and batch must be >= 1")
        self.model_dir = Path(model_dir)
        self.workers = processes
        self.language = language
        self.batch = batch
        self.load = RecognizerLoad(processes, batch)
        self._batcher: MicroBatcher[Pcm, tuple[str, str, float, float, float, float]] = MicroBatcher(
            self._run_batch, decoders=processes, max_batch=batch
        )
        saved = {k: os.environ.get(k) for k in (*PINNED_THREADS, "HF_HUB_OFFLINE")}
        os.environ.update({k: "1" for k in PINNED_THREADS} | {"HF_HUB_OFFLINE": "1"})
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Barrier(processes)
        try:  # the children inherit the environment of the moment they are spawned
            self._pool = ProcessPoolExecutor(
                max_workers=processes,
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(
                    str(self.model_dir),
                    beam_size,
                    window_s,
                    language,
                    ready,
                    {"detect_language": detect_language, "other_language_below": other_language_below},
                    os.getpid(),
                ),
            )
            t0 = time.perf_counter()
            # every worker passes the barrier only once all have loaded the model: the pings return then
            for f in [self._pool.submit(_ping) for _ in range(processes * 2)]:
                f.result()
            pids = set(getattr(self._pool, "_processes", {}) or {})  # which took a ping is a race: ask the pool
            self.load_s = time.perf_counter() - t0
            # the admission rule's estimate starts from this host's measured decode time, not a typical one
            noise = np.random.default_rng(0).normal(0, 200, int(2 * SAMPLE_RATE)).clip(-32768, 32767)
            probes = [self._pool.submit(_decode_in_worker, [noise.astype(np.int16)]) for _ in range(processes)]
            self.load.decode_s = sorted(p.result()[0][4] for p in probes)[processes // 2]
            self.pids = sorted(pids)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self._closed = False

    async def transcribe(self, pcm: Pcm) -> Transcript:
        if self._closed:
            raise RuntimeError("ProcessRecognizer is closed")
        samples = np.ascontiguousarray(pcm, dtype=np.int16)
        t0 = time.perf_counter()
        if not len(samples):
            return Transcript("", self.language or "", -math.inf, 1.0, 0.0, 0.0)
        self.load.begin()
        decode_s: float | None = None
        share = 1.0
        try:
            text, language, logprob, no_speech, decode_s, share = await self._batcher.submit(samples)
        finally:
            self.load.end(decode_s, share)
        return Transcript(text, language, logprob, no_speech, len(samples) / SAMPLE_RATE, time.perf_counter() - t0)

    async def _run_batch(self, batch: list[Pcm]) -> list[tuple[str, str, float, float, float, float]]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, _decode_in_worker, batch)

    def close(self) -> None:
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessRecognizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
