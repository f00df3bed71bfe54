"""A real headless softphone for tests: baresip 1.0 (Debian package baresip-core) driven over ctrl_tcp.

It registers over SIP/TLS, calls with SRTP (SDES, ``mediaenc=srtp-mand``: no call without SRTP), plays a
WAV file as its microphone (module aufile), keeps what it sent and received as WAV files (module sndfile)
and sends RFC 4733 DTMF (menu command ``sndcode``). Everything lives in ``workdir``: baresip's config dir
(``-f``), its log (``baresip.log``) and the audio dumps (``audio/dump-<time>-{enc,dec}.wav``).

Measured with baresip 1.0.0 / libre 1.1.0:

* ctrl_tcp speaks netstrings of JSON: ``{"command": "dial", "params": "3646", "token": "t1"}`` in,
  ``{"response": true, "ok": true, "data": "...", "token": "t1"}`` and ``{"event": true, "type":
  "CALL_ESTABLISHED", ...}`` out. The commands are the menu module's (``dial``, ``hangup``, ``sndcode``,
  ``reginfo``).
* ``sip_cafile`` is loaded but the server's certificate is NOT verified (this version has no
  ``sip_verify_server``: it registers as well with a foreign CA or none). TLS here proves encryption, not
  the server's identity.
* aufile must get an 8 kHz mono file with ``ausrc_srate 8000`` / ``ausrc_channels 1``; when the file runs
  out the menu module hangs the call up ("audio error (0,end of file)"), so the microphone file is padded
  here with ``mic_hold`` seconds of silence.
* sndfile writes the decoded received audio as it arrives: the gaps where the far end sends no RTP are
  not in the file (Asterisk sends nothing while it waits in Read()).
* ``net_interface`` must be an IP (``127.0.0.1``): the name ``lo`` fails ("could not get network
  address"); left out, baresip offers the host's first interface address in its SDP.

Asterisk 22.10.1 side (measured for tests/test_real_softphone.py): the TLS transport needs ``method = tlsv1_2``
(without it the handshake fails: baresip logs "tls: connect: error (r=-1, ssl_err=1)", Asterisk nothing
at its default log level); ``media_encryption = sdes`` itself does not require a TLS transport (it also
worked over UDP, with the keys readable in the SDP), hence ``transport = <the tls transport>`` on the
endpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

MODULE_DIR = Path("/usr/lib/baresip/modules")
NEEDED_MODULES = ("g711", "aufile", "aubridge", "sndfile", "srtp", "account", "menu", "ctrl_tcp")
RATE = 8000

Event = dict[str, Any]


class SoftphoneError(RuntimeError):
    """The softphone did not do what was asked in time (the message quotes the end of baresip's log)."""


def baresip_available(binary: str = "baresip", module_dir: Path = MODULE_DIR) -> bool:
    """baresip on PATH with every module this driver loads."""
    return shutil.which(binary) is not None and all((module_dir / f"{m}.so").is_file() for m in NEEDED_MODULES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _padded_mic(source: Path, target: Path, hold_s: float) -> None:
    """``source`` (8 kHz mono 16-bit WAV) followed by ``hold_s`` seconds of silence."""
    with wave.open(str(source), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE, 1, 2):
            raise SoftphoneError(
                f"{source}: microphone WAV must be {RATE} Hz mono 16-bit, not {w.getframerate()} Hz "
                f"{w.getnchannels()} ch {8 * w.getsampwidth()}-bit"
            )
        frames = w.readframes(w.getnframes())
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(frames + bytes(2 * int(hold_s * RATE)))


def _exited(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` has exited within ``timeout`` s, leaving it unreaped."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


class Baresip:
    """One baresip process with one account, registered to ``server:port`` over TLS.

    ``with Baresip(...) as phone: phone.register(); phone.call("3646"); phone.send_dtmf("0"); phone.hang_up()``
    """

    def __init__(
        self,
        workdir: Path,
        server: str,
        port: int,
        user: str,
        password: str,
        ca_file: Path | None,
        mic_wav: Path,
        *,
        mediaenc: str = "srtp-mand",
        mic_hold: float = 120.0,
        binary: str = "baresip",
        start_timeout: float = 10.0,
    ) -> None:
        self.workdir = workdir
        self.aor = f"sip:{user}@{server}:{port}"
        self.audio_dir = workdir / "audio"
        self.log = workdir / "baresip.log"
        self.events: list[Event] = []
        self.media_encryption = ""  # the CALL_MENC event's parameter, e.g. "0,audio,AES_CM_128_HMAC_SHA1_80"
        self._buf = b""
        self._token = 0
        self._consumed = 0  # events before this index were already returned by _wait_event
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.audio_dir.mkdir(exist_ok=True)
        mic = workdir / "mic.wav"
        _padded_mic(mic_wav, mic, mic_hold)
        self.ctrl_port = _free_port()
        menc = f";mediaenc={mediaenc}" if mediaenc else ""
        (workdir / "accounts").write_text(
            f"<{self.aor};transport=tls>;auth_pass={password}{menc};audio_codecs=PCMU;regint=300\n"
        )
        (workdir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    # an IP, not "lo": baresip looks an interface name up and fails on lo (measured)
                    "net_interface 127.0.0.1",
                    f"sip_listen 127.0.0.1:{_free_port()}",
                    *([f"sip_cafile {ca_file}"] if ca_file else []),
                    "call_local_timeout 30",
                    "call_max_calls 1",
                    f"audio_source aufile,{mic}",
                    # no sound card: received audio goes to an unused bridge, sndfile keeps a copy
                    "audio_player aubridge,nil",
                    "audio_alert aubridge,nil",
                    f"ausrc_srate {RATE}",
                    f"auplay_srate {RATE}",
                    "ausrc_channels 1",
                    "auplay_channels 1",
                    "ausrc_format s16",
                    "auplay_format s16",
                    "auenc_format s16",
                    "audec_format s16",
                    "audio_level no",
                    "audio_buffer 20-160",
                    "rtcp_mux no",
                    "jitter_buffer_delay 5-10",
                    "rtp_stats no",
                    f"module_path {MODULE_DIR}",
                    "module g711.so",
                    "module aufile.so",
                    "module aubridge.so",
                    "module sndfile.so",
                    "module srtp.so",
                    "module_tmp account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    f"snd_path {self.audio_dir}",
                    "",
                ]
            )
        )
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [binary, "-f", str(workdir)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: close() kills all of it
            )
        try:
            self._connect(start_timeout)
        except BaseException:
            self.close()
            raise

    # --- public API ------------------------------------------------------------------------------

    def register(self, timeout: float = 10.0) -> None:
        """Wait until the account's REGISTER got its 200 OK (baresip registers at start)."""
        deadline = time.monotonic() + timeout
        while True:
            info = re.sub(r"\x1b\[[0-9;]*m", "", self.command("reginfo"))
            line = next((ln for ln in info.splitlines() if self.aor in ln), "")
            if re.search(r"\bOK\b", line):
                return
            if re.search(r"\bERR\b", line):
                raise self._error(f"registration of {self.aor} failed: {line.strip()}")
            if time.monotonic() >= deadline:
                raise self._error(f"{self.aor} not registered after {timeout} s: {line.strip() or info.strip()}")
            self._pump(0.2)

    def call(self, number: str, timeout: float = 10.0) -> None:
        """Dial ``number`` on the registrar; return once the call is answered (with media encryption)."""
        self.command("dial", number)
        closed_or_up = self._wait_event(lambda e: e.get("type") in ("CALL_ESTABLISHED", "CALL_CLOSED"), timeout)
        if closed_or_up["type"] == "CALL_CLOSED":
            raise self._error(f"call to {number} failed: {closed_or_up.get('param')}")
        menc = [e for e in self.events if e.get("type") == "CALL_MENC"]
        self.media_encryption = str(menc[-1].get("param", "")) if menc else ""

    def send_dtmf(self, digits: str, gap: float = 0.3) -> None:
        """RFC 4733 digits, one ``sndcode`` each (start, then end at the next command), ``gap`` s apart."""
        for digit in digits:
            if digit not in "0123456789*#ABCD":
                raise ValueError(f"not a DTMF digit: {digit!r}")
            self.command("sndcode", digit)
            self.idle(gap)

    def idle(self, seconds: float) -> None:
        """Let ``seconds`` pass while collecting baresip's events (keeps the ctrl_tcp socket drained)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._pump(left)

    def hang_up(self, timeout: float = 5.0) -> None:
        """Hang up the current call and wait until baresip reports it closed."""
        self.command("hangup")
        self.wait_closed(timeout)

    def wait_closed(self, timeout: float) -> Event:
        """Wait for the call's end (whoever hung up); the CALL_CLOSED event (``param`` = reason)."""
        return self._wait_event(lambda e: e.get("type") == "CALL_CLOSED", timeout)

    @property
    def received_wav(self) -> Path:
        """What the softphone heard in its last call (decoded, 8 kHz mono)."""
        return self._dump("dec")

    @property
    def sent_wav(self) -> Path:
        """What it sent in its last call (its microphone, before encoding)."""
        return self._dump("enc")

    @property
    def pid(self) -> int:
        """baresip's process id, also its process group's (-1 once closed)."""
        return self._proc.pid if self._proc is not None else -1

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop baresip: ``quit``, then SIGTERM / SIGKILL to its whole process group."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._send("quit", "")
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # the leader is waited for WITHOUT reaping it (WNOWAIT): while it is a zombie its pid, the group's id,
        # cannot be reused, so the group kill below can only reach baresip's own processes
        for sig, wait in ((None, 2.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            if _exited(proc.pid, wait):
                break
        with contextlib.suppress(ProcessLookupError):  # anything else left in its group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def __enter__(self) -> Baresip:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a baresip command over ctrl_tcp; its text output. Raises if baresip answers not ok."""
        token = self._send(name, params)
        resp = self._wait(lambda m: m.get("response") is True and m.get("token") == token, timeout, f"reply to {name}")
        if not resp.get("ok"):
            raise self._error(f"command {name} {params!r} failed: {resp.get('data')}")
        return str(resp.get("data", ""))

    # --- internals -------------------------------------------------------------------------------

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise self._error(f"baresip exited with {self._proc.returncode} at start")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), 0.5)
                self._sock.settimeout(0.1)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise self._error(f"baresip's ctrl_tcp port {self.ctrl_port} not open after {timeout} s") from None
                time.sleep(0.1)

    def _send(self, name: str, params: str) -> str:
        if self._sock is None:
            raise SoftphoneError("softphone is closed")
        self._token += 1
        token = f"t{self._token}"
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(body), body))
        return token

    def _pump(self, timeout: float) -> list[Event]:
        """Read ctrl_tcp messages for up to ``timeout`` s (returns early once something arrived)."""
        if self._sock is None:
            raise SoftphoneError("softphone is closed")
        got: list[Event] = []
        deadline = time.monotonic() + timeout
        while not got:
            try:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise self._error("baresip closed its ctrl_tcp connection")
                self._buf += chunk
            except TimeoutError:
                pass
            while True:
                head, colon, rest = self._buf.partition(b":")
                if not colon or not head.isdigit() or len(rest) < int(head) + 1:
                    break
                n = int(head)
                msg: Event = json.loads(rest[:n])
                self._buf = rest[n + 1 :]
                if msg.get("event"):
                    self.events.append(msg)
                got.append(msg)
            if time.monotonic() >= deadline:
                break
        return got

    def _wait(self, pred: Callable[[Event], bool], timeout: float, what: str) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self._pump(max(0.0, min(0.2, deadline - time.monotonic()))):
                if pred(msg):
                    return msg
            if not self.running:
                raise self._error(f"baresip exited while waiting for {what}")
            if time.monotonic() >= deadline:
                raise self._error(f"no {what} within {timeout} s")

    def _wait_event(self, pred: Callable[[Event], bool], timeout: float) -> Event:
        """The next event (after the last one returned here) that matches; those received meanwhile count."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._consumed, len(self.events)):
                if pred(self.events[i]):
                    self._consumed = i + 1
                    return self.events[i]
            if not self.running:
                raise self._error("baresip exited while waiting for an event")
            if time.monotonic() >= deadline:
                raise self._error(
                    f"no matching event within {timeout} s; events: {[e.get('type') for e in self.events]}"
                )
            self._pump(min(0.2, deadline - time.monotonic()))

    def _dump(self, kind: str) -> Path:
        found = sorted(self.audio_dir.glob(f"dump-*-{kind}.wav"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise SoftphoneError(f"no {kind} dump in {self.audio_dir} (no call with audio yet?)")
        return found[-1]

    def _error(self, message: str) -> SoftphoneError:
        try:
            tail = self.log.read_text(errors="replace")[-2000:]
        except OSError:
            tail = ""
        tail = re.sub(r"(\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\)\s*)+", "", tail)  # menu's status line
        return SoftphoneError(f"{message}\n--- end of {self.log} ---\n{tail}")
