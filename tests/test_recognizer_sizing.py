"""``[speech] processes = "auto"``: the recogniser sized by the CPUs the router may use (issue #21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agi_router.config import load_settings
from agi_router.exceptions import ConfigError
from agi_router.speech import capacity


def _host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpus: int, cpu_max: str | None, mem_mb: int) -> None:
    monkeypatch.setattr(capacity.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    cg = tmp_path / "cgroup"
    cg.mkdir(exist_ok=True)
    if cpu_max is not None:
        (cg / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(capacity, "_cgroup_cpus", lambda: capacity.__dict__["_cgroup_cpus_orig"](cg))
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {mem_mb * 1024} kB\n")
    monkeypatch.setattr(capacity, "_available_mb", lambda: capacity.__dict__["_available_mb_orig"](meminfo))


@pytest.fixture(autouse=True)
def _originals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(capacity.__dict__, "_cgroup_cpus_orig", capacity._cgroup_cpus)
    monkeypatch.setitem(capacity.__dict__, "_available_mb_orig", capacity._available_mb)


@pytest.mark.parametrize(
    "cpus, cpu_max, mem_mb, expected, why",
    [
        (2, None, 8000, 2, "2 CPUs in the affinity mask"),
        (1, None, 8000, 0, "one CPU, decoding in the router's own thread"),
        (16, None, 64000, 8, "16 CPUs"),  # capped: more processes would only hold memory
        (8, "200000 100000", 8000, 2, "cgroup quota 2 CPUs of 8"),  # a container's quota, not the host's CPUs
        (8, "150000 100000", 8000, 0, "cgroup quota 1.5 CPUs"),
        (4, "max 100000", 8000, 4, "4 CPUs in the affinity mask"),
        (4, None, 600, 1, "memory for 1 (600 MB available)"),
    ],
)
def test_auto_sizing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpus: int, cpu_max: str | None, mem_mb: int, expected: int,
    why: str,
) -> None:  # fmt: skip
    _host(monkeypatch, tmp_path, cpus, cpu_max, mem_mb)
    n, reason = capacity.auto_processes()
    assert (n, why in reason) == (expected, True), reason


def test_this_host_gets_an_answer_with_a_reason() -> None:
    n, reason = capacity.auto_processes()
    assert 0 <= n <= capacity.MAX_AUTO_PROCESSES and "CPU" in reason


def test_processes_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text("[speech]\n")
    assert load_settings(cfg).speech.processes == "auto"  # the default
    cfg.write_text("[speech]\nprocesses = 3\n")
    assert load_settings(cfg).speech.processes == 3
    cfg.write_text('[speech]\nprocesses = "many"\n')
    with pytest.raises(ConfigError, match=r'must be "auto" or a number of worker processes'):
        load_settings(cfg)
    cfg.write_text("[speech]\nprocesses = 99\n")
    with pytest.raises(ConfigError, match="processes"):
        load_settings(cfg)
