"""Recognition in worker processes (``[speech] processes``): the same transcripts as in-process, and the
load gauge the admission rule reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agi_router.speech.capacity import ProcessRecognizer
from agi_router.speech.evaluation import read_wav
from agi_router.speech.recognizer import WhisperRecognizer

SOUNDS = Path("/usr/share/asterisk/sounds/fr_CA_f_June")
pytestmark = pytest.mark.skipif(
    not (SOUNDS / "vm-goodbye.wav").is_file(),
    reason="needs Debian's asterisk-core-sounds-fr-wav (scripts/test-debs.txt)",
)
NAMES = ["vm-goodbye", "vm-password", "vm-incorrect", "conf-onlyperson"]


def test_worker_processes_transcribe_like_the_router_process(whisper_dir: Path) -> None:
    clips = [read_wav(SOUNDS / f"{n}.wav") for n in NAMES]
    local = WhisperRecognizer(whisper_dir)
    expected = [local.transcribe_sync(c).text for c in clips]
    local.close()
    with ProcessRecognizer(whisper_dir, processes=2) as rec:
        assert len(rec.pids) == 2 and all(pid != 0 for pid in rec.pids)

        async def run() -> list[str]:
            results = await asyncio.gather(*(rec.transcribe(c) for c in clips))
            return [r.text for r in results]

        got = asyncio.run(run())
        assert got == expected
        assert rec.load.inflight == 0 and rec.load.decoded == len(clips) and rec.load.busy_s > 0


MORE = [*NAMES, "vm-intro", "vm-message", "vm-options", "conf-getpin"]


def test_a_batched_pass_gives_the_sequential_transcripts_and_scores(whisper_dir: Path) -> None:
    """Micro-batching must not change what the router hears: same text, same confidence inputs."""
    clips = [read_wav(SOUNDS / f"{n}.wav") for n in MORE if (SOUNDS / f"{n}.wav").is_file()]
    assert len(clips) >= 6
    rec = WhisperRecognizer(whisper_dir)
    try:
        one_by_one = [rec._decode(c) for c in clips]
        batched = rec.decode_batch(clips[:4]) + rec.decode_batch(clips[4:])
    finally:
        rec.close()
    assert [b[0] for b in batched] == [s[0] for s in one_by_one]
    assert [round(b[2], 4) for b in batched] == [round(s[2], 4) for s in one_by_one]  # avg log-probability
    assert [round(b[3], 4) for b in batched] == [round(s[3], 4) for s in one_by_one]  # no-speech probability


@pytest.mark.parametrize("processes", [0, 1])
def test_callers_who_queue_up_share_a_pass(whisper_dir: Path, processes: int) -> None:
    clips = [read_wav(SOUNDS / f"{n}.wav") for n in NAMES]
    rec: WhisperRecognizer | ProcessRecognizer
    if processes:
        rec = ProcessRecognizer(whisper_dir, processes=1, batch=4)
    else:
        rec = WhisperRecognizer(whisper_dir, workers=1, batch=4)
    expected = ["" for _ in clips]
    try:

        async def run() -> list[str]:
            lone = await rec.transcribe(clips[0])  # alone: a pass of one, at once
            expected[0] = lone.text
            results = await asyncio.gather(*(rec.transcribe(c) for c in clips))
            return [r.text for r in results]

        got = asyncio.run(run())
    finally:
        rec.close()
    # the first of the four started alone on the free decoder; the three that queued behind it shared a pass
    assert (rec._batcher.batches, rec._batcher.items) == (3, 5)
    assert got[0] == expected[0] and all(got)
    assert rec.load.inflight == 0 and rec.load.decoded == 5


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_recogniser_workers_die_with_a_router_killed_by_sigkill(whisper_dir: Path, tmp_path: Path) -> None:
    """Found in issue #21: `kill -9` of a router with `processes = 2` left both workers (~175 MB each) and
    multiprocessing's resource tracker running as orphans, still there 30 s later. The real `serve`."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "router.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[agi]\nport = 0\n[metrics]\nport = 0\n[ami]\nport = 1\n'
        f'[speech]\nmodel_dir = "{whisper_dir}"\nprocesses = 2\nrtp_port_start = 33500\nrtp_port_end = 33510\n'
    )
    log = tmp_path / "router.log"
    helpers: list[int] = []
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agi_router", "serve"], stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, "AGI_ROUTER_CONFIG": str(cfg)})  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "agi-router ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        assert "recogniser: 2 worker process(es) x batch 4 ([speech] processes)" in log.read_text()
        helpers = _descendants(proc.pid)
        assert len(helpers) >= 3, helpers  # two workers and the resource tracker
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        t0 = time.monotonic()
        while any(_alive(p) for p in helpers) and time.monotonic() - t0 < 2.0:
            time.sleep(0.02)
        left = [p for p in helpers if _alive(p)]
        print(f"{len(helpers)} helper processes gone {time.monotonic() - t0:.2f} s after the router's SIGKILL")
        assert left == [], f"still running 2 s after the router's SIGKILL: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for p in helpers:  # orphans of a failed run: not this test's business to leave behind
            if _alive(p):
                os.kill(p, signal.SIGKILL)
