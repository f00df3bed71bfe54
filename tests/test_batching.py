"""The micro-batcher (speech/batching.py): a lone utterance is never delayed, queued ones share a pass,
a caller who hangs up is not decoded, a failed pass fails only its own callers."""

from __future__ import annotations

import asyncio

import pytest

from agi_router.speech.batching import MicroBatcher


class Decoder:
    def __init__(self, delay: float = 0.05, fail_on: str | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.passes: list[list[str]] = []

    async def __call__(self, batch: list[str]) -> list[str]:
        self.passes.append(list(batch))
        await asyncio.sleep(self.delay)
        if self.fail_on in batch:
            raise RuntimeError("worker died")
        return [x.upper() for x in batch]


async def test_a_lone_item_starts_at_once() -> None:
    dec = Decoder(delay=0.0)
    b = MicroBatcher(dec, decoders=2, max_batch=4)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await b.submit("a") == "A"
    assert loop.time() - t0 < 0.05 and dec.passes == [["a"]]


async def test_items_that_queue_behind_busy_decoders_share_passes_in_order() -> None:
    dec = Decoder()
    b = MicroBatcher(dec, decoders=1, max_batch=4)
    first = asyncio.ensure_future(b.submit("a"))
    await asyncio.sleep(0)  # "a" is being decoded
    rest = [asyncio.ensure_future(b.submit(x)) for x in "bcdefg"]
    assert await asyncio.gather(first, *rest) == list("ABCDEFG")
    assert dec.passes == [["a"], ["b", "c", "d", "e"], ["f", "g"]]
    assert (b.batches, b.items, b.queued) == (3, 7, 0)


async def test_a_caller_who_hangs_up_while_queued_is_not_decoded() -> None:
    dec = Decoder()
    b = MicroBatcher(dec, decoders=1, max_batch=4)
    first = asyncio.ensure_future(b.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(b.submit("b"))
    stays = asyncio.ensure_future(b.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == "A" and await stays == "C"
    assert dec.passes == [["a"], ["c"]]


async def test_a_failed_pass_fails_its_callers_only() -> None:
    dec = Decoder(fail_on="b")
    b = MicroBatcher(dec, decoders=1, max_batch=2)
    first = asyncio.ensure_future(b.submit("a"))
    await asyncio.sleep(0)
    doomed = [asyncio.ensure_future(b.submit(x)) for x in "bc"]
    later = asyncio.ensure_future(b.submit("d"))
    assert await first == "A"
    for d in doomed:
        with pytest.raises(RuntimeError, match="worker died"):
            await d
    assert await later == "D"  # the batcher goes on


def test_bad_sizes_are_refused() -> None:
    async def run(batch: list[int]) -> list[int]:
        return batch

    with pytest.raises(ValueError):
        MicroBatcher(run, decoders=0, max_batch=4)
    with pytest.raises(ValueError):
        MicroBatcher(run, decoders=1, max_batch=0)
