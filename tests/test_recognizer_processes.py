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
