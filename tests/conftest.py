from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agi_router.motives.catalogue import Catalogue
from agi_router.policy.config import Policy, load_policy
from agi_router.privacy import Pseudonymizer

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def mini_catalogue() -> Catalogue:
    return Catalogue.load(FIXTURES / "catalogue-mini.toml")


@pytest.fixture(scope="session")
def mini_policy(mini_catalogue: Catalogue) -> Policy:
    return load_policy(FIXTURES / "policy-mini.toml", catalogue=mini_catalogue)


@pytest.fixture(scope="session")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(b"test-key-0123456789abcdef")


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real model, joined from the installed wheels and hashed: the only 145 MB hash of the session
    (every test that needs Whisper, in-process or in a router subprocess, shares it)."""
    from agi_router.speech.model import default_model_dir, ensure_whisper_base

    # one copy for every test run on this machine (not one per run under pytest's temporary folders, which
    # keeps the last three: ~430 MB); checked by size + mtime marker, rebuilt if anything is off
    return ensure_whisper_base(default_model_dir(Path(tempfile.gettempdir()) / "agi-router-test-data"))


async def eventually(predicate: Callable[[], bool], timeout: float = 2.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        await asyncio.sleep(interval)
    return True


def bundled_policy_always_open() -> Policy:
    """The bundled 2024 policy with opening hours off (tests run at any hour)."""
    from agi_router.policy.config import default_policy_path, parse_policy

    text = default_policy_path().read_text().replace("[hours]\nenabled = true", "[hours]\nenabled = false")
    assert "[hours]\nenabled = false" in text
    return parse_policy(text, catalogue=Catalogue.load())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the session (caller memory, shared callbacks)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (scripts/bootstrap.sh test installs it)")
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`agi-router` run in-process (the CLI tests) points the root logger at the stderr pytest captured for
    that test; without this, later tests log into a closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
