"""The SIP edge that `agi-router asterisk setup` installs (issue #20): generated accounts, TLS + SRTP off
loopback, placeholder refusals, `asterisk agent add`, and no secret anywhere in the repository.
(Through a real Asterisk 22: tests/test_real_sip_edge.py.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agi_router.asterisk_setup import install_sip, setup_asterisk
from agi_router.config import AMISettings, Settings, SipSettings, load_settings
from agi_router.exceptions import ConfigError
from agi_router.sip.accounts import DEFAULT_ROSTER, AccountBook, Membership, is_placeholder
from agi_router.sip.pjsip import queue_names
from agi_router.sip.tls import ensure_certificate

ROOT = Path(__file__).resolve().parents[1]


def _settings(tmp_path: Path, **sip: object) -> Settings:
    return Settings(data_dir=tmp_path / "var", ami=AMISettings(secret="s" * 20), sip=SipSettings(**sip))  # type: ignore[arg-type]


def _setup(tmp_path: Path, **sip: object) -> tuple[Settings, Path]:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    settings = _settings(tmp_path, **sip)
    setup_asterisk(settings, etc, None)
    return settings, etc


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur = ""
    for line in text.splitlines():
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            cur = line
            out.setdefault(cur, [])
        elif line and not line.startswith(";") and cur:
            out[cur].append(line)
    return out


def test_first_setup_generates_the_roster_with_private_random_passwords(tmp_path: Path) -> None:
    settings, etc = _setup(tmp_path)
    path = settings.path(settings.sip.accounts_file)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    book = AccountBook.load(path)
    assert [a.name for a in book.accounts.values()] == [a.name for a in DEFAULT_ROSTER]
    passwords = [a.password for a in book.accounts.values()]
    assert len(set(passwords)) == len(passwords) and all(len(p) >= 16 for p in passwords)
    assert not book.placeholders()
    include = (etc / "agi-router-pjsip.conf").read_text()
    assert stat.S_IMODE((etc / "agi-router-pjsip.conf").stat().st_mode) == 0o640
    for acc in book.accounts.values():
        assert f"username = {acc.name}\npassword = {acc.password}\n" in include
    # on loopback (the default): no TLS transport, no SRTP (SIPp agents and the test trunk speak plain RTP)
    assert "transport-tls" not in include and "media_encryption" not in include
    # a second setup keeps the passwords (phones stay registered) and shows none again
    report = setup_asterisk(settings, etc, None)
    assert report.new_accounts == [] and AccountBook.load(path).accounts == book.accounts
    assert not any("password" in line for line in report.lines())


def test_the_printed_report_shows_new_passwords_once(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    lines = setup_asterisk(_settings(tmp_path), etc, None).lines()
    shown = [line for line in lines if "password" in line and "new " in line]
    assert len(shown) == len(DEFAULT_ROSTER)
    assert any("accounts --passwords" in line for line in lines)


def test_queue_members_come_from_the_accounts_and_name_only_shipped_queues(tmp_path: Path) -> None:
    _, etc = _setup(tmp_path)
    members = _sections((etc / "agi-router-members.conf").read_text())
    assert members["[accueil](+)"] == [f"member => PJSIP/agent{n},5,agent{n}" for n in (1, 2, 3)]
    assert set(members) == {f"[{q}](+)" for q in queue_names((ROOT / "asterisk" / "queues.conf").read_text())}
    shipped = (ROOT / "asterisk" / "queues.conf").read_text()
    assert "member =>" not in shipped and shipped.rstrip().endswith('#include "agi-router-members.conf"')


def test_off_loopback_tls_and_srtp_come_on_with_a_generated_certificate(tmp_path: Path) -> None:
    settings, etc = _setup(tmp_path, bind="0.0.0.0")
    include = (etc / "agi-router-pjsip.conf").read_text()
    secs = _sections(include)
    assert secs["[transport-tls]"][:3] == ["type = transport", "protocol = tls", "bind = 0.0.0.0:5061"]
    assert f"cert_file = {etc.resolve() / 'agi-router-tls.crt'}" in include
    for acc in DEFAULT_ROSTER:
        body = secs[f"[{acc.name}](endpoint-template)"]
        assert {"transport = transport-tls", "media_encryption = sdes", "media_encryption_optimistic = no"} <= set(
            body
        )
    assert stat.S_IMODE((etc / "agi-router-tls.key").stat().st_mode) == 0o640
    assert stat.S_IMODE(settings.path(settings.sip.key_file).stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((etc / "agi-router-tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=800)
    # a second setup keeps the certificate (phones that pinned it keep working)
    before = (etc / "agi-router-tls.crt").read_bytes()
    setup_asterisk(settings, etc, None)
    assert (etc / "agi-router-tls.crt").read_bytes() == before


def test_tls_on_loopback_on_request_and_where_another_container_sees_the_files(tmp_path: Path) -> None:
    settings = _settings(tmp_path, tls="on", tls_port=15061)
    (tmp_path / "export").mkdir()
    install_sip(settings, tmp_path / "export", Path("/etc/asterisk"))
    include = (tmp_path / "export" / "agi-router-pjsip.conf").read_text()
    assert "bind = 127.0.0.1:15061" in include
    assert "cert_file = /etc/asterisk/agi-router-tls.crt\npriv_key_file = /etc/asterisk/agi-router-tls.key" in include


@pytest.mark.parametrize("password", ["change-me-agent1", "short-one", "agent1-agent1-agent1"])
def test_a_placeholder_password_is_refused_off_loopback_only(tmp_path: Path, password: str) -> None:
    settings, etc = _setup(tmp_path)  # creates the accounts
    path = settings.path(settings.sip.accounts_file)
    data = json.loads(path.read_text())
    data["accounts"][1]["password"] = password
    path.write_text(json.dumps(data))
    setup_asterisk(settings, etc, None)  # loopback: a lab, accepted
    assert f"password = {password}" in (etc / "agi-router-pjsip.conf").read_text()
    with pytest.raises(ConfigError, match=r"not on loopback only.*agent1 hold a placeholder"):
        setup_asterisk(_settings(tmp_path, bind="192.0.2.10"), etc, None)


def test_tls_off_is_refused_off_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tls = off while SIP listens on 0\.0\.0\.0"):
        _setup(tmp_path, bind="0.0.0.0", tls="off")


def test_certificate_problems_are_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    first = ensure_certificate(cert, key, "127.0.0.1")
    assert first.generated and re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", first.fingerprint)
    other = ensure_certificate(tmp_path / "c2.pem", tmp_path / "k2.pem", "127.0.0.1")
    assert not ensure_certificate(cert, key, "127.0.0.1").generated
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        ensure_certificate(cert, other.key_file, "127.0.0.1")
    with pytest.raises(ConfigError, match="give both the certificate and its key"):
        ensure_certificate(cert, tmp_path / "missing.pem", "127.0.0.1")
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        ensure_certificate(tmp_path / "bad.pem", key, "127.0.0.1")


def test_accounts_file_errors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AccountBook.load(path)
    path.write_text(json.dumps({"accounts": [{"name": "Agent 1", "password": "x" * 20}]}))
    with pytest.raises(ConfigError, match=r"accounts\[0\].*account name 'Agent 1'"):
        AccountBook.load(path)
    path.write_text(json.dumps({"accounts": [{"name": "a1", "password": "abc;def-ghi-jkl-mno"}]}))
    with pytest.raises(ConfigError, match="no spaces, ';'"):
        AccountBook.load(path)
    path.write_text(json.dumps({"accounts": [{"name": "a1"}]}))
    with pytest.raises(ConfigError, match="missing 'password'"):
        AccountBook.load(path)


def test_placeholder_rules() -> None:
    assert is_placeholder("change-me-softphone") and is_placeholder("123456") and is_placeholder("x" * 15)
    assert is_placeholder("agent7-is-my-password", "agent7")
    assert not is_placeholder("Zq3-kP9_vX2mW8rT4yB6nL1c", "agent7")
    assert Membership.parse("accueil:5") == Membership("accueil", 5)
    with pytest.raises(ConfigError):
        Membership.parse("accueil:five")


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "router.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "var"}"\n[ami]\nsecret = "{"s" * 20}"\n')
    env = {**os.environ, "AGI_ROUTER_CONFIG": str(cfg)}
    return subprocess.run([sys.executable, "-m", "agi_router", *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_adding_an_agent_is_one_command(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    r = _cli(tmp_path, "asterisk", "agent", "add", "agent4", "--queue", "droits", "--queue", "accueil:5",
             "--etc", str(etc))  # fmt: skip
    assert r.returncode == 0, r.stderr
    password = re.search(r"agent agent4: password (\S+)", r.stdout).group(1)  # type: ignore[union-attr]
    assert "module reload res_pjsip.so" in r.stdout
    include = (etc / "agi-router-pjsip.conf").read_text()
    assert "[agent4](endpoint-template)\ncontext = agents\n" in include and f"password = {password}" in include
    assert "member => PJSIP/agent4,5,agent4" in (etc / "agi-router-members.conf").read_text()
    listing = _cli(tmp_path, "asterisk", "accounts", "--passwords").stdout.splitlines()
    assert f"agent4\tagent\tdroits:0,accueil:5\t{password}" in listing and len(listing) == len(DEFAULT_ROSTER) + 1
    assert password not in _cli(tmp_path, "asterisk", "accounts").stdout
    for args, message in [
        (("agent4", "--queue", "droits"), "account 'agent4' exists already"),
        (("agent5", "--queue", "nowhere"), "unknown queue(s) nowhere"),
        (("agent5",), "name at least one --queue"),
        (("Agent 5", "--queue", "droits"), "account name 'Agent 5'"),
    ]:
        bad = _cli(tmp_path, "asterisk", "agent", "add", *args)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    r = _cli(tmp_path, "asterisk", "agent", "remove", "agent4", "--etc", str(etc))
    assert r.returncode == 0 and "agent4" not in (etc / "agi-router-pjsip.conf").read_text()


def test_sip_settings_load_and_are_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('[sip]\nbind = "0.0.0.0"\ntls_port = 5071\n')
    s = load_settings(cfg).sip
    assert s.tls_on and not s.on_loopback and s.tls_port == 5071
    cfg.write_text('[sip]\ntls = "maybe"\n')
    with pytest.raises(ConfigError, match=r"sip\.tls"):
        load_settings(cfg)
    assert not Settings().sip.tls_on  # loopback by default: nothing leaves the host


# What may look like a secret in the tracked tree and is not one: the tests' own throw-away values.
_CONFIG_SECRET = re.compile(r"^\s*(password|secret)\s*[=:]\s*(?!\"\")(?!\$\{)(\S+)", re.M | re.I)
_CONFIG_FILES = (".conf", ".cfg", ".toml", ".ini", ".yml", ".yaml", ".env", ".example", ".md", ".xml", ".sh")
_SECRET_PATTERNS = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"auth_pass=(?!\{|PASSWORD)[^;>\s]+"),  # PASSWORD: the documentation's placeholder
    re.compile(r"change-me-(softphone|agent\d)"),
]


def test_no_secret_in_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = []
    for rel in tracked.splitlines():
        if rel.startswith("tests/") or not (ROOT / rel).is_file():
            continue  # tests hold throw-away values for fakes
        try:
            text = (ROOT / rel).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        patterns = [*_SECRET_PATTERNS, *([_CONFIG_SECRET] if rel.endswith(_CONFIG_FILES) else [])]
        for pat in patterns:
            for m in pat.finditer(text):
                found.append(f"{rel}: {m.group(0).strip()[:60]}")
    assert found == []


def test_asterisk_security_events_are_counted_by_kind_and_logged_per_source(caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry

    from agi_router.ami.protocol import Message
    from agi_router.metrics.instruments import RouterMetrics
    from agi_router.sip.security import EVENT_KINDS, SecurityEvents

    class Subscriptions:
        def __init__(self) -> None:
            self.handlers: dict[str, object] = {}

        def on(self, event: str, handler: object) -> None:
            self.handlers[event] = handler

    ami, metrics, now = Subscriptions(), RouterMetrics(CollectorRegistry()), [0.0]
    sec = SecurityEvents(ami, metrics, clock=lambda: now[0])  # type: ignore[arg-type]
    assert set(ami.handlers) == set(EVENT_KINDS) and "SuccessfulAuth" not in ami.handlers

    def event(name: str, remote: str = "IPV4/UDP/203.0.113.7/5060", service: str = "PJSIP") -> Message:
        return Message([("Event", name), ("Service", service), ("RemoteAddress", remote), ("AccountID", "agent1")])

    with caplog.at_level("WARNING", logger="agi_router.sip.security"):
        for _ in range(50):
            sec.on_event(event("ChallengeResponseFailed"))
        sec.on_event(event("InvalidAccountID", "IPV4/UDP/198.51.100.2/5060"))
        sec.on_event(event("InvalidPassword", service="AMI"))
        sec.on_event(event("SuccessfulAuth"))  # not an attack: not counted
        now[0] = 61.0
        sec.on_event(event("ChallengeResponseFailed"))
    c = metrics.sip_security_events
    assert c.labels("failed_auth", "pjsip")._value.get() == 51
    assert c.labels("unknown_endpoint", "pjsip")._value.get() == 1 and c.labels("failed_auth", "ami")._value.get() == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # one line per source and minute, not one per request
    assert lines[-1].startswith("security: 51 refused request(s) from 203.0.113.7")


def test_behind_the_kamailio_edge_asterisk_stays_on_loopback_and_phones_are_srtp_with_path(tmp_path: Path) -> None:
    settings, etc = _setup(tmp_path, edge="kamailio")
    include = (etc / "agi-router-pjsip.conf").read_text()
    secs = _sections(include)
    assert "[transport-tls]" not in secs  # TLS ends at the edge
    body = set(secs["[agent1](endpoint-template)"])
    assert {"media_encryption = sdes", "media_encryption_optimistic = no", "rewrite_contact = no"} <= body
    assert not any(line.startswith("transport =") for line in body)
    assert "support_path = yes" in (ROOT / "asterisk" / "pjsip.conf").read_text()
    tls_cfg = settings.path(Path("sip/kamailio-tls.cfg")).read_text()
    assert f"certificate = {settings.path(settings.sip.cert_file)}" in tls_cfg and "method = TLSv1.2+" in tls_cfg
    # exposed through the edge: a weak password is refused although Asterisk binds loopback
    path = settings.path(settings.sip.accounts_file)
    data = json.loads(path.read_text())
    data["accounts"][0]["password"] = "change-me-softphone"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="through the kamailio edge"):
        setup_asterisk(settings, etc, None)


def test_the_edge_lets_every_account_name_register() -> None:
    cfg = (ROOT / "edge" / "kamailio.cfg").read_text()
    regex = re.search(r'#!define AUTH_USERS_RE "(.*)"', cfg).group(1)  # type: ignore[union-attr]
    from agi_router.sip.accounts import NAME_RE

    assert regex == NAME_RE.pattern


@pytest.mark.skipif(shutil.which("kamailio") is None, reason="needs kamailio (scripts/test-debs.txt installs it)")
@pytest.mark.parametrize("defines", [[], ["-A", "WITH_TLS", "-A", 'TLS_CONFIG="/etc/kamailio/tls.cfg"']])
def test_the_shipped_edge_configuration_is_accepted_by_kamailio(defines: list[str]) -> None:
    r = subprocess.run(["kamailio", "-c", "-f", str(ROOT / "edge" / "kamailio.cfg"), *defines],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "config file ok" in out.lower(), out[-1500:]
    assert "ERROR" not in out, out[-1500:]


def test_the_report_says_which_sip_edge_was_installed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = setup_asterisk(_settings(tmp_path / "a"), tmp_path / "a", None).lines()
    tls = setup_asterisk(_settings(tmp_path / "b", bind="0.0.0.0"), tmp_path / "b", None).lines()
    assert any(line.startswith("SIP: plain UDP/RTP on loopback only") for line in plain)
    assert not any("TLS" in line and "SHA-256" in line for line in plain)
    assert any(line.startswith("SIP over TLS on 0.0.0.0:5061") for line in tls)
    assert not any(line.startswith("SIP: plain") for line in tls)
