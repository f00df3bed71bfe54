"""G.711 tables: identical to the reference implementation (Sun g711.c, as in CPython's audioop)."""

from __future__ import annotations

import hashlib
import importlib
import warnings

import numpy as np
import pytest

from agi_router.media import g711

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_BYTES = bytes(range(256))
# sha256 of the full encode table (65,536 samples) and decode table (256 codes), taken from
# audioop.lin2ulaw/ulaw2lin/lin2alaw/alaw2lin (CPython 3.11); fixed here because audioop is gone in 3.13.
REFERENCE = {
    "ulaw": (
        "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a",
        "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
    ),
    "alaw": (
        "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b",
        "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
    ),
}


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_tables_match_the_reference(law: str) -> None:
    enc = getattr(g711, f"{law}_encode")(ALL_SAMPLES)
    dec = getattr(g711, f"{law}_decode")(ALL_BYTES)
    assert (hashlib.sha256(enc).hexdigest(), hashlib.sha256(dec.tobytes()).hexdigest()) == REFERENCE[law]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_against_audioop_when_present(law: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            audioop = importlib.import_module("audioop")
        except ImportError:
            pytest.skip("audioop removed in this Python; the sha256 test covers it")
    assert getattr(audioop, f"lin2{law}")(ALL_SAMPLES.tobytes(), 2) == getattr(g711, f"{law}_encode")(ALL_SAMPLES)
    ref = np.frombuffer(getattr(audioop, f"{law}2lin")(ALL_BYTES, 2), dtype=np.int16)
    assert (ref == getattr(g711, f"{law}_decode")(ALL_BYTES)).all()


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_round_trip_is_idempotent_and_close(law: str) -> None:
    enc, dec = getattr(g711, f"{law}_encode"), getattr(g711, f"{law}_decode")
    once = dec(enc(ALL_SAMPLES))
    assert enc(once) == enc(ALL_SAMPLES)  # decoded values are fixed points
    err = np.abs(once.astype(np.int32) - ALL_SAMPLES.astype(np.int32))
    assert (err <= np.maximum(np.abs(ALL_SAMPLES.astype(np.int32)) // 16, 16)).all()


def test_ulaw_silence_and_extremes() -> None:
    assert g711.ulaw_encode(np.zeros(4, dtype=np.int16)) == b"\xff" * 4
    assert g711.ulaw_decode(b"\xff\x7f\x00\x80").tolist() == [0, 0, -32124, 32124]
