from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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

    return ensure_whisper_base(default_model_dir(tmp_path_factory.mktemp("data")))


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
