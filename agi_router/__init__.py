"""agi-router: FastAGI call router for a health-insurance hotline.

Architecture (one folder per concern):

* ``agi/``        FastAGI edge: wire format, session, server
* ``callflow/``   per-call orchestration and motive capture sources
* ``policy/``     the pure decision core (facts in, decision out) and its validated config
* ``motives/``    the motive catalogue
* ``directory/``  online-account directory backends (SQLite, HTTP)
* ``state/``      caller memory backends (in-process, Redis)
"""

import os as _os

# Every numpy / CTranslate2 computation here is one-threaded by design (recognition runs in its own worker
# threads or processes); BLAS and OpenMP pools only spin around it (measured: OpenBLAS kept 1.7 cores busy
# for a one-thread decode, 225 -> 145 ms of CPU per utterance with one thread, same throughput). Set before
# numpy is first imported; an operator's own value wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")

from .exceptions import (  # noqa: E402 - after the thread pinning above, on purpose
    AGICommandError,
    AGIConnectionClosed,
    AGIDeadChannel,
    AGIError,
    AGIHangup,
    AGIHeaderTooLarge,
    AGIInvalidCommand,
    AGIProtocolError,
    AGITimeout,
    AGIUsageError,
    AMIActionError,
    AMIAuthError,
    AMIConnectionError,
    AMIError,
    AMIProtocolError,
    AMITimeout,
    ConfigError,
    DirectoryError,
    DirectoryImportError,
    DirectoryTimeout,
    MediaError,
    NumberFormatError,
    PolicyError,
    RouterError,
    StateStoreError,
)

__version__ = "0.1.0"

__all__ = [
    "AGICommandError",
    "AGIConnectionClosed",
    "AGIDeadChannel",
    "AGIError",
    "AGIHangup",
    "AGIHeaderTooLarge",
    "AGIInvalidCommand",
    "AGIProtocolError",
    "AGITimeout",
    "AGIUsageError",
    "AMIActionError",
    "AMIAuthError",
    "AMIConnectionError",
    "AMIError",
    "AMIProtocolError",
    "AMITimeout",
    "ConfigError",
    "DirectoryError",
    "DirectoryImportError",
    "DirectoryTimeout",
    "MediaError",
    "NumberFormatError",
    "PolicyError",
    "RouterError",
    "StateStoreError",
    "__version__",
]
