"""Run a real Asterisk 22 with the project's ``asterisk/`` configuration, for the ``asterisk`` tests.

``AGI_ROUTER_ASTERISK=/opt/ast22/sbin/asterisk`` names the binary; its modules are looked up in
``<prefix>/lib/asterisk/modules`` (or ``AGI_ROUTER_ASTERISK_MODULES``). The project's config files are
installed by the product's own ``agi-router asterisk setup`` (configuration + the AMI secret include),
then changed only for addresses (AGI URL, SIP and AMI ports), plus a test-only context appended to
extensions.conf. Everything lives in a temporary directory; Asterisk runs in the foreground (-f)
as a child process and is stopped at the end.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agi_router.config import SipSettings

ROOT = Path(__file__).resolve().parents[1]
AMI_USER = "agi-router"
AMI_SECRET = "harness-ami-secret-0123"  # given to `asterisk setup` as the router's [ami] secret

TEST_CONTEXT = """
[test-agent]
; A queue member reached as Local/<name>@test-agent: answers, talks 2 s, hangs up.
exten => _[a-z0-9].,1,Answer()
 same => n,Wait(2)
 same => n,Hangup()

[test-callee]
; A called-back caller who answers and stays on the line a little.
exten => _[+0-9].,1,UserEvent(CalleeRinging,Number: ${EXTEN})
 same => n,Answer()
 same => n,Wait(3)
 same => n,Hangup()

; --- appended by tests/asterisk_harness.py -------------------------------------------------------
[test-caller]
; The caller side of a Local channel: waits, types DTMF given in TEST_DTMF (one group per wait), then
; stays on the line for TEST_HOLD seconds (or hangs up early when TEST_HANGUP_AFTER is set).
exten => s,1,Wait(${IF($["${TEST_FIRST_WAIT}" = ""]?1.5:${TEST_FIRST_WAIT})})
 same => n,ExecIf($["${TEST_PLAY}" != ""]?Playback(${TEST_PLAY}))
 same => n,ExecIf($["${TEST_DTMF1}" != ""]?SendDTMF(${TEST_DTMF1},250))
 same => n,ExecIf($["${TEST_HANGUP_AFTER}" != ""]?Hangup())
 same => n,Wait(2.5)
 same => n,ExecIf($["${TEST_PLAY2}" != ""]?Playback(${TEST_PLAY2}))
 same => n,ExecIf($["${TEST_DTMF2}" != ""]?SendDTMF(${TEST_DTMF2},250))
 same => n,Wait(${IF($["${TEST_HOLD}" = ""]?8:${TEST_HOLD})})
 same => n,Hangup()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AsteriskInstance:
    binary: Path
    root: Path
    ami_port: int
    sip_port: int
    agi_url: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "log" / "messages"

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "asterisk.conf"

    def cli(self, command: str, timeout: float = 10.0) -> str:
        out = subprocess.run(
            [str(self.binary), "-C", str(self.conf), "-rx", command],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return out.stdout.decode(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.cli("core stop now", timeout=5)
            self.proc.wait(10)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def write_config(
    binary: Path,
    root: Path,
    *,
    agi_url: str,
    ami_port: int,
    sip_port: int,
    router_data_dir: Path | None = None,
    sip: SipSettings | None = None,
    node_settings: Path | None = None,
) -> AsteriskInstance:
    """``router_data_dir``: install as a user would, with the secret the router generated there (else the
    harness's fixed test secret, for tests that run the router in-process). ``node_settings``: install with
    ``agi-router asterisk setup`` run on that router settings file, whose ``[node]``/``[ami]`` give the node's
    addresses (a node of several): nothing patched afterwards, the addresses must agree with the arguments."""
    prefix = binary.resolve().parent.parent
    modules = Path(os.environ.get("AGI_ROUTER_ASTERISK_MODULES", prefix / "lib" / "asterisk" / "modules"))
    installed_data = Path(os.environ.get("AGI_ROUTER_ASTERISK_DATA", prefix / "var" / "lib" / "asterisk"))
    etc = root / "etc"
    for sub in ("etc", "lib", "spool", "run", "log/cdr-csv", "data/sounds", "keys", "agi-bin", "db"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # astdatadir must hold the XML documentation (stasis refuses to start without it): link the
    # installed data in, keep sounds/ our own so generated prompts never touch the installation
    if installed_data.is_dir():
        for entry in installed_data.iterdir():
            if entry.name != "sounds" and not (root / "data" / entry.name).exists():
                (root / "data" / entry.name).symlink_to(entry)
    # [directories] must be written without "(!)", or the section is ignored (measured, 22.10.1)
    (etc / "asterisk.conf").write_text(
        "[directories]\n"
        f"astetcdir => {etc}\nastmoddir => {modules}\nastvarlibdir => {root / 'lib'}\n"
        f"astdbdir => {root / 'db'}\nastkeydir => {root / 'keys'}\nastdatadir => {root / 'data'}\n"
        f"astagidir => {root / 'agi-bin'}\nastspooldir => {root / 'spool'}\nastrundir => {root / 'run'}\n"
        f"astlogdir => {root / 'log'}\nastsbindir => {binary.parent}\n"
        "[options]\nverbose = 3\nnocolor = yes\ndefaultlanguage = fr\nhideconnect = yes\n"
    )
    (etc / "modules.conf").write_text(
        "[modules]\nautoload = yes\n"
        # nothing here needs these, and some want hardware or network services
        "noload => chan_dahdi.so\nnoload => res_pjsip_phoneprov.so\nnoload => cdr_radius.so\n"
        "noload => cel_radius.so\nnoload => res_snmp.so\nnoload => res_config_ldap.so\n"
        "noload => chan_iax2.so\nnoload => chan_unistim.so\nnoload => chan_skinny.so\nnoload => chan_mgcp.so\n"
        "noload => res_hep.so\nnoload => res_hep_pjsip.so\nnoload => res_hep_rtcp.so\n"
        "noload => res_stasis_test.so\n"
    )
    (etc / "logger.conf").write_text("[general]\n[logfiles]\nmessages => notice,warning,error,verbose\n")
    (etc / "cdr.conf").write_text("[general]\nenable = no\n")
    (etc / "http.conf").write_text("[general]\nenabled = no\n")
    if node_settings is not None:
        env = {**os.environ, "AGI_ROUTER_CONFIG": str(node_settings)}
        r = subprocess.run([sys.executable, "-m", "agi_router", "asterisk", "setup", "--etc", str(etc)], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"asterisk setup failed: {r.stderr.strip()}")
        ext, man = (etc / "extensions.conf").read_text(), (etc / "manager.conf").read_text()
        if f"ROUTER_AGI = {agi_url}\n" not in ext or f"\nport = {ami_port}\n" not in man:
            raise RuntimeError(f"{node_settings}: [node]/[agi]/[ami] do not give {agi_url} and AMI port {ami_port}")
        if f"bind = 127.0.0.1:{sip_port}\n" not in (etc / "pjsip.conf").read_text():
            raise RuntimeError(f"{node_settings}: [node] sip_port is not {sip_port}")
    elif router_data_dir is not None:
        install_config(etc, router_data_dir, sip=sip)
        patch_addresses(etc, agi_url=agi_url, ami_port=ami_port, sip_port=sip_port)
    else:
        install_config(etc, root / "router-var", secret=AMI_SECRET, sip=sip)
        patch_addresses(etc, agi_url=agi_url, ami_port=ami_port, sip_port=sip_port)
    (etc / "extensions.conf").write_text((etc / "extensions.conf").read_text() + TEST_CONTEXT)
    return AsteriskInstance(binary, root, ami_port, sip_port, agi_url)


def install_config(etc: Path, data_dir: Path, *, secret: str = "", sip: SipSettings | None = None) -> None:
    """The product's own `agi-router asterisk setup --etc`: asterisk/*.conf + the AMI secret include + the SIP
    accounts (generated passwords) and, with ``sip`` TLS on, the TLS transport and SRTP.
    ``secret`` "" = the router's generated secret under ``data_dir`` (as on a real first install)."""
    from agi_router.asterisk_setup import setup_asterisk
    from agi_router.config import AMISettings, Settings

    settings = Settings(data_dir=data_dir, ami=AMISettings(secret=secret), sip=sip or SipSettings())
    setup_asterisk(settings, etc, None)


def sip_password(etc: Path, name: str) -> str:
    """An account's generated password, as `asterisk setup` wrote it for Asterisk (agi-router-pjsip.conf)."""
    text = (etc / "agi-router-pjsip.conf").read_text()
    m = re.search(rf"^username = {re.escape(name)}\npassword = (\S+)$", text, flags=re.M)
    if m is None:
        raise KeyError(f"no SIP account {name} in {etc / 'agi-router-pjsip.conf'}")
    return m.group(1)


def patch_addresses(etc: Path, *, agi_url: str, ami_port: int, sip_port: int) -> None:
    """Only the addresses differ from what `asterisk setup` installed (free ports for a test)."""
    ext = re.sub(r"^ROUTER_AGI = .*$", f"ROUTER_AGI = {agi_url}", (etc / "extensions.conf").read_text(), flags=re.M)
    (etc / "extensions.conf").write_text(ext)
    (etc / "pjsip.conf").write_text((etc / "pjsip.conf").read_text().replace("127.0.0.1:5060", f"127.0.0.1:{sip_port}"))
    (etc / "manager.conf").write_text((etc / "manager.conf").read_text().replace("port = 5038", f"port = {ami_port}"))


def start(inst: AsteriskInstance, timeout: float = 30.0) -> None:
    inst.proc = subprocess.Popen(
        [str(inst.binary), "-C", str(inst.conf), "-f", "-n", "-q"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if inst.proc.poll() is not None:
            raise RuntimeError(f"asterisk exited with {inst.proc.returncode}; see {inst.log}")
        try:
            with socket.create_connection(("127.0.0.1", inst.ami_port), 0.5) as s:
                s.settimeout(2)
                if s.recv(100).startswith(b"Asterisk Call Manager"):
                    inst.cli("core waitfullybooted", timeout=20)
                    return
        except OSError:
            time.sleep(0.2)
    inst.stop()
    raise RuntimeError("asterisk did not open its AMI port in time")


class AMI:
    """A minimal blocking AMI client for tests (the product's own AMI client is asyncio)."""

    def __init__(self, port: int, secret: str = AMI_SECRET) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 5)
        self.sock.settimeout(0.5)
        self.buf = b""
        self.events: list[dict[str, str]] = []
        self._read_until(b"\r\n")  # banner
        self.send({"Action": "Login", "Username": AMI_USER, "Secret": secret, "ActionID": "login"})
        resp = self.wait(lambda m: m.get("ActionID") == "login", 5)
        if resp.get("Response") != "Success":
            raise RuntimeError(f"AMI login failed: {resp}")

    def _read_until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self.buf += self.sock.recv(65536)
        head, self.buf = self.buf.split(sep, 1)
        return head

    def send(self, fields: dict[str, str]) -> None:
        self.sock.sendall(("".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode())

    def messages(self, timeout: float) -> Iterator[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                while b"\r\n\r\n" not in self.buf:
                    self.buf += self.sock.recv(65536)
            except TimeoutError:
                continue
            raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
            msg: dict[str, str] = {}
            for line in raw.decode(errors="replace").split("\r\n"):
                k, _, v = line.partition(": ")
                msg.setdefault(k, v)
            self.events.append(msg)
            yield msg

    def wait(self, pred: object, timeout: float) -> dict[str, str]:
        for m in self.messages(timeout):
            if pred(m):  # type: ignore[operator]
                return m
        raise TimeoutError("no matching AMI message")

    def close(self) -> None:
        try:
            self.send({"Action": "Logoff"})
        finally:
            self.sock.close()


def stop_router(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a router process (its clean shutdown), SIGKILL it after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def router_healthy(port: int) -> bool:
    """A router's /healthz says ok (it is up and logged in to its AMI)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return '"ok"' in r.read().decode()
    except OSError:
        return False
