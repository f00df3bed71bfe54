"""The Asterisk side, installed so that it works with this router as shipped: nothing to edit by hand.

``agi-router asterisk setup --etc /etc/asterisk --sounds /var/lib/asterisk/sounds/fr`` does three things:

1. copies the project's ``asterisk/*.conf`` unchanged into ``--etc``;
2. writes ``--etc/agi-router-ami.conf`` (mode 0640) holding the AMI secret that the router itself uses:
   ``manager.conf`` includes it inside the router's ``[agi-router]`` user, so there is one secret, kept in
   one place (the router's ``ami.secret`` file, created on first start, or ``$AGI_ROUTER_AMI_SECRET``,
   or ``[ami] secret``), read by both sides;
3. installs the SIP edge from the router's ``[sip]`` settings (``sip/``): the line's accounts with generated
   passwords (``var/sip/accounts.json``, created with the demonstration roster on the first run; the new
   passwords are printed once), rendered into ``agi-router-pjsip.conf`` (0640) and ``agi-router-members.conf``;
   TLS + SRTP when ``[sip] tls`` is on (by default whenever ``[sip] bind`` is not loopback), with a
   self-signed certificate generated when none is given. A placeholder password, or TLS off, is refused
   unless SIP listens on loopback only;
4. speaks the French prompts (espeak-ng) into the router's ``sounds_dir`` if they are not there yet, and
   installs the same files into ``--sounds`` for Asterisk: the router streams two of them itself (barge-in),
   Asterisk plays the rest. A prompt replaced by a recorded one in the router's folder is installed again
   by the next ``setup``.

Asterisk refuses the router's login when the include is missing (no secret: Asterisk logs that the
``#include`` file does not exist), never accepts an empty or placeholder secret from us.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import Settings, is_loopback
from .exceptions import ConfigError
from .privacy import load_or_create_key
from .sip.accounts import AccountBook, SipAccount
from .sip.pjsip import (
    MEMBERS_INCLUDE,
    PJSIP_INCLUDE,
    EdgeShape,
    kamailio_tls_config,
    queue_names,
    render_members,
    render_pjsip,
)
from .sip.tls import Certificate, ensure_certificate

__all__ = [
    "AMI_SECRET_INCLUDE",
    "SetupReport",
    "ami_secret",
    "asterisk_conf_dir",
    "install_sip",
    "setup_asterisk",
]

AMI_SECRET_INCLUDE = "agi-router-ami.conf"  # written next to manager.conf, #included by it
PLACEHOLDER_SECRETS = frozenset({"change-me-ami", "change-me", "secret", "password", "admin"})
_SAFE_SECRET = re.compile(r"^[A-Za-z0-9._~+/=@%^-]{12,128}$")


def asterisk_conf_dir() -> Path:
    """The Asterisk configuration setup installs: ``$AGI_ROUTER_ASTERISK_CONF`` if set (your own copy), else
    the package's (``agi_router/data/asterisk``: the repository's ``asterisk/`` folder, shipped in the wheel)."""
    env = os.environ.get("AGI_ROUTER_ASTERISK_CONF", "")
    folder = Path(env) if env else Path(__file__).resolve().parent / "data" / "asterisk"
    if not (folder / "manager.conf").exists():
        raise ConfigError(
            "the Asterisk configuration to install is missing (no manager.conf): "
            + ("point $AGI_ROUTER_ASTERISK_CONF at a copy of the project's asterisk/ folder" if env
               else "reinstall agi-router (its package data holds it)"),
            file=str(folder),
        )  # fmt: skip
    return folder


def ami_secret(settings: Settings) -> str:
    """The AMI secret both the router and Asterisk use: ``$AGI_ROUTER_AMI_SECRET``, else ``[ami] secret``,
    else the secret file (``[ami] secret_file``, created with a random secret, mode 0600, if missing)."""
    a = settings.ami
    where = "AGI_ROUTER_AMI_SECRET"
    secret = os.environ.get("AGI_ROUTER_AMI_SECRET", "")
    if not secret:
        where, secret = "ami.secret", a.secret
    if not secret:
        path = settings.path(a.secret_file)
        where, secret = str(path), load_or_create_key(path).decode("ascii", errors="replace")
    if not _SAFE_SECRET.match(secret):
        raise ConfigError(
            f"the AMI secret from {where} must be 12-128 characters without spaces, ';' or quotes "
            "(remove it to let the router generate one)",
            key="ami.secret",
        )
    if secret.lower() in PLACEHOLDER_SECRETS and not is_loopback(a.host):
        raise ConfigError(
            f"the AMI secret from {where} is a well-known placeholder and AMI is not on loopback ({a.host}): "
            "set a real secret, or remove it to let the router generate one",
            key="ami.secret",
        )
    return secret


@dataclass
class SetupReport:
    configs: list[Path] = field(default_factory=list)
    secret_file: Path | None = None
    prompts_built: int = 0
    prompts_installed: int = 0
    accounts_file: Path | None = None
    accounts: int = 0
    new_accounts: list[SipAccount] = field(default_factory=list)
    tls: Certificate | None = None
    tls_bind: str = ""
    edge_tls_config: Path | None = None

    def lines(self) -> list[str]:
        out = [f"configuration: {len(self.configs)} file(s) into {self.configs[0].parent}" if self.configs else ""]
        if self.secret_file is not None:
            out.append(f"AMI secret: {self.secret_file} (the router's own secret, mode 0640)")
        if self.accounts_file is not None:
            out.append(f"SIP accounts: {self.accounts} from {self.accounts_file} (mode 0600)")
            for acc in self.new_accounts:
                out.append(f"  new account {acc.name} ({acc.role}): password {acc.password}")
            if self.new_accounts:
                out.append("  (shown once; `agi-router asterisk accounts --passwords` shows them again)")
        if self.tls is not None:
            made = "generated, self-signed" if self.tls.generated else "given"
            at = f"the edge (TLS config {self.edge_tls_config})" if self.edge_tls_config else self.tls_bind
            out.append(f"SIP over TLS on {at}, media SRTP (SDES): certificate {self.tls.cert_file} "
                       f"({made}, until {self.tls.not_after:%Y-%m-%d}, SHA-256 {self.tls.fingerprint})")  # fmt: skip
        elif self.accounts_file is not None:
            out.append("SIP: plain UDP/RTP on loopback only ([sip] bind = 127.0.0.1; set it to take phones "
                       "from the network: TLS and SRTP then come on)")  # fmt: skip
        if self.edge_tls_config is not None:
            out.append("  run the edge: kamailio -f edge/kamailio.cfg -A LISTEN=udp:<public ip>:5060 -A WITH_TLS "
                       f"-A LISTEN_TLS=tls:<public ip>:5061 -A 'TLS_CONFIG=\"{self.edge_tls_config}\"' "
                       "(edge/README.md)")  # fmt: skip
        out.append(f"prompts: {self.prompts_built} spoken, {self.prompts_installed} installed")
        return [line for line in out if line]


def _write_private(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _install_sip(settings: Settings, etc: Path, src: Path, report: SetupReport, etc_as: Path | None = None) -> None:
    """The SIP edge: accounts (created on first run), the TLS certificate, the two includes. ``etc_as``: the
    path at which Asterisk sees ``etc`` (another container), for the certificate paths in the include."""
    sip = settings.sip
    book, created = AccountBook.load_or_create(settings.path(sip.accounts_file))
    where = f"through the {sip.edge} edge" if sip.on_loopback else f"on {sip.bind}"
    if sip.exposed:
        weak = book.placeholders()
        if weak:
            raise ConfigError(
                f"SIP is reached {where}, not on loopback only, and account(s) {', '.join(weak)} hold a "
                f"placeholder or weak password (< 16 characters, change-me..., the account name): remove them "
                f"from the file and run `agi-router asterisk agent add NAME` to get a generated one",
                file=str(book.path),
            )
    if not sip.on_loopback and not sip.tls_on:
        raise ConfigError(
            f"tls = off while SIP listens on {sip.bind}: passwords' digests and the callers' voices would "
            "cross the network in clear; set tls = auto (or keep bind = 127.0.0.1 behind an edge)",
            key="sip.tls",
        )
    edge = EdgeShape(tls=False, srtp=sip.srtp, behind_edge=sip.edge != "none")
    if sip.tls_on or sip.edge != "none":
        cert = ensure_certificate(settings.path(sip.cert_file), settings.path(sip.key_file), sip.bind)
        report.tls, report.tls_bind = cert, f"{sip.bind}:{sip.tls_port}"
    if sip.tls_on:
        # Asterisk reads its own copies (it may run as another user, or in another container)
        crt, key = etc / "agi-router-tls.crt", etc / "agi-router-tls.key"
        shutil.copyfile(cert.cert_file, crt)
        _write_private(key, cert.key_file.read_text(), 0o640)
        seen = etc_as if etc_as is not None else etc.resolve()
        edge = replace(edge, tls=True, bind=sip.bind, tls_port=sip.tls_port, cert_file=seen / crt.name,
                       key_file=seen / key.name)  # fmt: skip
    if sip.edge == "kamailio":
        # Kamailio's tls module reads this (edge/kamailio.cfg: -A WITH_TLS -A 'TLS_CONFIG="..."')
        report.edge_tls_config = settings.path(Path("sip/kamailio-tls.cfg"))
        _write_private(report.edge_tls_config, kamailio_tls_config(cert.cert_file, cert.key_file), 0o600)
    _write_private(etc / PJSIP_INCLUDE, render_pjsip(book, edge), 0o640)
    members = render_members(book, queue_names((src / "queues.conf").read_text()))
    _write_private(etc / MEMBERS_INCLUDE, members, 0o644)
    report.accounts_file, report.accounts, report.new_accounts = book.path, len(book.accounts), created


def install_sip(settings: Settings, etc: Path, etc_as: Path | None = None) -> SetupReport:
    """Only the SIP edge (after ``agent add``/``remove``, or into a folder Asterisk's container copies from):
    accounts, certificate, the two includes."""
    if not etc.is_dir():
        raise ConfigError("not a directory (name Asterisk's astetcdir)", file=str(etc))
    report = SetupReport()
    try:
        _install_sip(settings, etc, asterisk_conf_dir(), report, etc_as)
    except OSError as exc:
        raise ConfigError(f"cannot write the SIP configuration: {exc.strerror}", file=str(etc)) from exc
    return report


def node_routers(settings: Settings) -> tuple[str, ...]:
    """The FastAGI addresses the node's dialplan tries (``[node] routers``; by default this router)."""
    if settings.node.routers:
        return settings.node.routers
    host = settings.agi.host if settings.agi.host not in ("0.0.0.0", "::") else "127.0.0.1"
    return (f"agi://{host}:{settings.agi.port}/3646",)


def install_node(settings: Settings, etc: Path) -> None:
    """Write this node's addresses into the configuration just copied to ``etc``: the routers (extensions.conf
    ROUTER_AGI), the AMI port the router connects to (manager.conf), the loopback UDP transport (pjsip.conf)
    and the RTP range (rtp.conf). With the defaults the files stay as shipped."""
    node, sp = settings.node, settings.speech
    if not (sp.rtp_port_end < node.rtp_start or sp.rtp_port_start > node.rtp_end):
        raise ConfigError(
            f"[node] rtp_start..rtp_end ({node.rtp_start}-{node.rtp_end}) holds the router's capture ports "
            f"([speech] rtp_port_start..end {sp.rtp_port_start}-{sp.rtp_port_end}): move one range",
            file=settings.source,
        )
    edits = {
        "extensions.conf": [(r"^ROUTER_AGI = .*$", "ROUTER_AGI = " + ",".join(node_routers(settings)))],
        "manager.conf": [(r"^port = \d+$", f"port = {settings.ami.port}")],
        "pjsip.conf": [(r"^bind = 127\.0\.0\.1:\d+$", f"bind = 127.0.0.1:{node.sip_port}")],
        "rtp.conf": [
            (r"^rtpstart = \d+$", f"rtpstart = {node.rtp_start}"),
            (r"^rtpend = \d+$", f"rtpend = {node.rtp_end}"),
        ],
    }
    for name, subs in edits.items():
        path = etc / name
        text = path.read_text()
        for pattern, value in subs:
            text, n = re.subn(pattern, value, text, count=1, flags=re.M)
            if n != 1:
                raise ConfigError(f"cannot find {pattern!r} to install the node's address", file=str(path))
        path.write_text(text)


def setup_asterisk(
    settings: Settings,
    etc: Path | None,
    sounds: Path | None,
    *,
    voice: str = "fr+f2",
    rebuild_prompts: bool = False,
    etc_as: Path | None = None,
) -> SetupReport:
    """Install the configuration (``etc``) and the prompts (``sounds``, Asterisk's ``sounds/fr``); either may
    be None to skip it. Raises :class:`ConfigError` with the path and the fix when a target is unusable."""
    from .motives.catalogue import Catalogue
    from .prompts import build_prompts

    report = SetupReport()
    if etc is not None:
        if not etc.is_dir():
            raise ConfigError("not a directory (create it, or name Asterisk's astetcdir)", file=str(etc))
        src = asterisk_conf_dir()
        secret = ami_secret(settings)
        try:
            for conf in sorted(src.glob("*.conf")):
                target = etc / conf.name
                shutil.copyfile(conf, target)
                report.configs.append(target)
            install_node(settings, etc)
            include = etc / AMI_SECRET_INCLUDE
            _write_private(
                include,
                "; Written by `agi-router asterisk setup`: the router's AMI secret, included by manager.conf\n"
                "; inside [agi-router]. Do not edit: change the router's secret and run setup again.\n"
                f"secret = {secret}\n",
                0o640,
            )
            report.secret_file = include
            _install_sip(settings, etc, src, report, etc_as)
        except OSError as exc:
            raise ConfigError(f"cannot write the Asterisk configuration: {exc.strerror}", file=str(etc)) from exc
    if sounds is not None:
        own = settings.path(Path(settings.speech.sounds_dir))
        catalogue = Catalogue.load(settings.catalogue_file)
        report.prompts_built = len(build_prompts(catalogue, own, voice=voice, only_missing=not rebuild_prompts))
        if own.resolve() != sounds.resolve():
            try:
                for wav in sorted((own / "router").rglob("*.wav")):
                    target = sounds / wav.relative_to(own)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(wav, target)
                    report.prompts_installed += 1
            except OSError as exc:
                raise ConfigError(f"cannot install the prompts: {exc.strerror}", file=str(sounds)) from exc
        else:
            report.prompts_installed = len(list((own / "router").rglob("*.wav")))
    return report
