"""The load-test harness: router-only driver (simulated Asterisk), call mix, reports; SIPp scenarios."""

import sys as _sys

try:  # `python -m loadtest.X` outside the project's environment: one line, not a traceback
    import numpy as _numpy  # noqa: F401

    import agi_router as _agi_router  # noqa: F401
except ImportError as _exc:  # pragma: no cover - only outside the environment
    print(f"loadtest: {_exc.name} is not installed in this Python ({_sys.executable}): run scripts/bootstrap.sh "
          "test, then .venv/bin/python -m loadtest...", file=_sys.stderr)  # fmt: skip
    raise SystemExit(2) from None
