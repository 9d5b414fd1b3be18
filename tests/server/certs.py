"""Certificates made for a test (cryptography): a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate the CA signed, and one another CA signed; and a tokens file."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

FULL_TOKEN = "full-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"


@dataclass(frozen=True)
class Certificates:
    ca: Path  # PEM certificate of the CA that signed the server's and the client's
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate another CA signed
    stranger_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer: str, issuer_key, ca: bool = False, hosts: tuple[str, ...] = ()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))  # fmt: skip
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, certificate, key) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, other_key = _key(), _key()
    ca = _certificate("framecast test CA", ca_key, "framecast test CA", ca_key, ca=True)
    other = _certificate("another CA", other_key, "another CA", other_key, ca=True)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _certificate("framecast server", server_key, "framecast test CA", ca_key, hosts=("127.0.0.1", "localhost"))
    client = _certificate("framecast client", client_key, "framecast test CA", ca_key)
    stranger = _certificate("stranger", stranger_key, "another CA", other_key)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    return Certificates(ca_path, *_write(folder, "server", server, server_key), *_write(folder, "client", client, client_key),
                        *_write(folder, "stranger", stranger, stranger_key))  # fmt: skip


def write_tokens(path: Path, *lines: str) -> Path:
    path.write_text("# framecast tokens\n\n" + "\n".join(lines) + "\n")
    return path
