"""Logging set-up: plain text or one JSON object per line. Caller numbers never reach a log:
the call flow only ever holds the pseudonym in what it logs.

Lines are written by a thread of their own (QueueHandler -> QueueListener), never by the event loop: a log
reader that stalls (a full pipe nobody reads, a slow journal) must not stop calls from being routed. When
``max_pending`` lines wait, further lines are dropped and counted (:data:`DROPPED`), never blocking.
Measured: with a plain StreamHandler on an unread pipe the router froze after ~80 calls' lines (64 KiB), and
Asterisk, which waits on FastAGI without a timeout, kept the next callers in silence."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["DROPPED", "JSONFormatter", "setup_logging"]


class _Dropped:
    lines = 0


DROPPED = _Dropped()  # log lines dropped because the writer could not keep up (agi_router_log_lines_dropped)
_listener: logging.handlers.QueueListener | None = None


class _NonBlockingQueueHandler(logging.handlers.QueueHandler):
    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            DROPPED.lines += 1


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(
    level: str = "INFO", json_lines: bool = False, *, stream: TextIO | None = None, max_pending: int = 10_000
) -> None:
    global _listener
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if json_lines:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    stop_logging()
    pending: queue.Queue[logging.LogRecord] = queue.Queue(max_pending)
    _listener = logging.handlers.QueueListener(pending, handler)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_NonBlockingQueueHandler(pending)]
    root.setLevel(level)


def stop_logging() -> None:
    """Write what is pending and stop the writer thread (at exit, or before a new set-up)."""
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        try:  # behind the pending lines, waiting a little for room
            listener.queue.put(listener._sentinel, timeout=2.0)  # type: ignore[attr-defined]
        except queue.Full:  # the writer is stuck: it is a daemon thread, the process may still exit
            return
        thread = listener._thread  # (QueueListener.stop() would wait for ever on a stuck writer)
        if thread is not None:
            thread.join(2.0)


atexit.register(stop_logging)
