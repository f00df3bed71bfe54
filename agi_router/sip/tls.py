"""The certificate of the SIP TLS transport.

``agi-router asterisk setup`` generates a self-signed one (ECDSA P-256, valid 825 days, the bind address
and the host name as subject alternative names) when neither ``[sip] cert_file`` nor ``key_file`` exists;
the operator replaces them with a certificate from their CA (same two paths, PEM) and runs setup again.
Softphones of a self-signed deployment must be told to trust this certificate (or its SHA-256
fingerprint, which setup prints) — the documented softphone settings say how.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["Certificate", "ensure_certificate"]

VALID_DAYS = 825  # the longest validity clients still accept for a server certificate


@dataclass(frozen=True, slots=True)
class Certificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # SHA-256 of the DER, colon-separated hex (what softphones show)
    not_after: dt.datetime
    generated: bool  # created by this setup run


def _names(bind: str) -> tuple[list[str], list[str]]:
    dns = sorted({socket.gethostname(), "localhost"})
    ips = {"127.0.0.1"}
    try:
        addr = ipaddress.ip_address(bind)
        if not addr.is_unspecified:
            ips.add(str(addr))
    except ValueError:
        dns.append(bind)
    return dns, sorted(ips)


def _generate(cert_file: Path, key_file: Path, bind: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    dns, ips = _names(bind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if bind in ("0.0.0.0", "::") else bind)])
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem_key)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(cert_file: Path, key_file: Path, bind: str) -> Certificate:
    """The transport's certificate, generated if both files are missing; checked (readable PEM, the key
    matches, not expired) either way. Raises :class:`ConfigError` naming the file and the fix."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    generated = False
    if not cert_file.exists() and not key_file.exists():
        try:
            _generate(cert_file, key_file, bind)
        except OSError as exc:
            raise ConfigError(f"cannot write the TLS certificate: {exc.strerror}", file=str(exc.filename)) from None
        generated = True
    for p in (cert_file, key_file):
        if not p.exists():
            raise ConfigError(
                "missing: give both the certificate and its key (PEM), or neither to let setup generate them",
                file=str(p), key="sip.cert_file" if p == cert_file else "sip.key_file",
            )  # fmt: skip
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"not a PEM certificate ({exc})", file=str(cert_file), key="sip.cert_file") from None
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise ConfigError(f"not an unencrypted PEM private key ({exc})", file=str(key_file),
                          key="sip.key_file") from None  # fmt: skip
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise ConfigError("the private key does not belong to the certificate", file=str(key_file), key="sip.key_file")
    not_after = cert.not_valid_after_utc
    if not_after <= dt.datetime.now(dt.UTC):
        raise ConfigError(f"the certificate expired on {not_after:%Y-%m-%d}: renew it (or delete both files "
                          "to let setup generate one)", file=str(cert_file), key="sip.cert_file")  # fmt: skip
    fp = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return Certificate(cert_file, key_file, fp, not_after, generated)
