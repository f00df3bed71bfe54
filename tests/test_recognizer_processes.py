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
