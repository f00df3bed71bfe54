"""Opt-in sampling of capture audio, so an operator can measure recognition on their own calls.

Off by default (``[sampling] enabled = false``). When on, a call is sampled only if

* the caller did not object: the dialplan plays a notice and sets ``ROUTER_SAMPLING_CONSENT`` (``1`` =
  may be kept; anything else, or unset, = not kept), read by the router once per call; and
* it falls in the sampled share (``rate``).

What is kept, per utterance: the 8 kHz audio the recogniser heard, its transcript, what the router
understood, the round (motive or confirmation) and the time to the minute. Never the caller's number,
pseudonym or call id: a sample cannot be joined back to a caller through the router's own data. Each
sample is one file, encrypted at rest (AES-GCM, key derived from the pseudonymisation key, like the
callbacks), deleted after ``retention_days`` and when the folder outgrows ``max_mb`` (oldest first).

``agi-router speech label DIR`` labels them, ``agi-router speech eval DIR`` measures on them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..exceptions import ConfigError

if TYPE_CHECKING:
    from ..agi.session import AGISession

__all__ = ["SUFFIX", "Sample", "SampleStore", "Sampler"]

log = logging.getLogger(__name__)

SUFFIX = ".sample"
_AAD = b"agi-router sample v1"


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    at: str  # ISO time, to the minute (UTC)
    mode: str  # motive | confirm
    transcript: str
    understood: dict[str, Any]  # the understander's JSON (motive classify's), or {"reply": ...}
    pcm: npt.NDArray[np.int16]

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 8000


class SampleStore:
    def __init__(self, folder: Path, key: bytes, *, retention_days: float = 30.0, max_mb: float = 500.0) -> None:
        self.folder = folder
        self.retention_s = retention_days * 86400
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._aead = AESGCM(key[:32])

    # -- writing ------------------------------------------------------------------------------------

    def save(self, pcm: npt.NDArray[np.int16], *, mode: str, transcript: str, understood: dict[str, Any]) -> Path:
        """Encrypt one utterance into the folder (created 0700); returns the file written."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = datetime.now(UTC)
        sid = f"{now:%Y%m%dT%H%M}-{secrets.token_hex(4)}"
        meta = {"id": sid, "at": f"{now:%Y-%m-%dT%H:%M}Z", "mode": mode, "transcript": transcript}
        header = json.dumps({**meta, "understood": understood}, ensure_ascii=False).encode()
        plain = struct.pack(">I", len(header)) + header + np.asarray(pcm, dtype="<i2").tobytes()
        nonce = secrets.token_bytes(12)
        path = self.folder / f"{sid}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(nonce + self._aead.encrypt(nonce, plain, _AAD))
        tmp.replace(path)
        self.purge()
        return path

    def purge(self, now: float | None = None) -> int:
        """Delete what is past retention, then the oldest until under ``max_mb``; returns how many."""
        now = time.time() if now is None else now
        files = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime) if self.folder.is_dir() else []
        removed = 0
        total = sum(p.stat().st_size for p in files)
        for p in files:
            st = p.stat()
            if now - st.st_mtime > self.retention_s or total > self.max_bytes:
                p.unlink(missing_ok=True)
                total -= st.st_size
                removed += 1
        return removed

    # -- reading ------------------------------------------------------------------------------------

    def read(self, path: Path) -> Sample:
        try:
            blob = path.read_bytes()
            plain = self._aead.decrypt(blob[:12], blob[12:], _AAD)
        except OSError as exc:
            raise ConfigError(f"cannot read sample: {exc.strerror or exc}", file=str(path)) from None
        except (InvalidTag, ValueError):
            raise ConfigError(
                "cannot decrypt this sample: it was written with another key (or is damaged); use the router's "
                "key_file that wrote it",
                file=str(path),
            ) from None
        (n,) = struct.unpack(">I", plain[:4])
        h = json.loads(plain[4 : 4 + n])
        pcm = np.frombuffer(plain[4 + n :], dtype="<i2").astype(np.int16)
        return Sample(h["id"], h["at"], h["mode"], h["transcript"], h["understood"], pcm)

    def __iter__(self) -> Iterator[Path]:
        """The samples, oldest first."""
        return iter(sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda p: (p.stat().st_mtime_ns, p.name)))


class Sampler:
    """Which calls are sampled (consent + share) and keeping their utterances; never fails a call."""

    def __init__(
        self,
        store: SampleStore,
        rate: float,
        *,
        consent_variable: str = "ROUTER_SAMPLING_CONSENT",
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.rate = rate
        self.consent_variable = consent_variable
        self.rng = rng
        self.kept = 0
        self.failed = 0

    async def decide(self, session: AGISession) -> bool:
        if self.rate <= 0:
            return False
        consent = await session.get_variable(self.consent_variable)
        return consent == "1" and self.rng() < self.rate

    def keep(self, pcm: npt.NDArray[np.int16], *, mode: str, transcript: str, understood: dict[str, Any]) -> str | None:
        """The sample's id, or None when it could not be kept (logged)."""
        try:
            path = self.store.save(pcm, mode=mode, transcript=transcript, understood=understood)
            self.kept += 1
            return path.name.removesuffix(SUFFIX)
        except (OSError, ValueError) as exc:
            self.failed += 1
            log.warning("capture sample not kept in %s: %s", self.store.folder, exc)
            return None
