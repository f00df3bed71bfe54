"""Logging never blocks the router: a log reader that stalls (a pipe nobody reads) costs dropped lines, not
routed calls. Without the writer thread, the first write past the pipe's 64 KiB blocks for ever (the test's
timeout fails it)."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from agi_router import logs


@pytest.mark.timeout(30)
def test_a_stalled_log_reader_never_blocks_the_caller_of_logging() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    r, w = os.pipe()
    stream = os.fdopen(w, "w", buffering=1)
    try:
        before = logs.DROPPED.lines
        logs.setup_logging("INFO", stream=stream, max_pending=500)
        log = logging.getLogger("agi_router.test")
        for i in range(5000):  # ~500 KiB of lines into a 64 KiB pipe nobody reads: returns (timeout otherwise)
            log.info("call %d routed to a queue, with a line long enough %s", i, "x" * 60)
        assert logs.DROPPED.lines - before > 3000  # most of them: the reader never read
    finally:
        got: list[int] = []
        reader = threading.Thread(target=lambda: got.extend(iter(lambda: len(os.read(r, 1 << 16)), 0)))
        reader.start()  # the reader wakes up: the pending lines are written, then the writer stops
        logs.stop_logging()
        root.handlers[:], root.level = saved
        stream.close()
        reader.join(10)
        os.close(r)
    assert sum(got) > 0
