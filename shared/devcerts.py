"""Development certificates for the QRS port, laid out the way the platform exports them.

A dev CA (`root.pem`), a server certificate for the local host names (`server.pem`,
`server_key.pem`) and a client certificate (`client.pem`, `client_key.pem`) that clients such
as qsAPI present to authenticate as the user in `X-Qlik-User`. Made once per folder and
reused, so a client configured once keeps working across restarts. For development only: the
keys are written unencrypted (mode 0600), as the platform's export without a password is.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825
HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class DevCertificates:
    """Where the files of one dev CA and its two certificates are."""

    folder: Path

    @property
    def root(self) -> Path:
        """The CA certificate: the client CA of the service, and what clients may trust."""
        return self.folder / "root.pem"

    @property
    def root_key(self) -> Path:
        """The CA's private key."""
        return self.folder / "root_key.pem"

    @property
    def server(self) -> Path:
        """The service's certificate."""
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        """The service's private key."""
        return self.folder / "server_key.pem"

    @property
    def client(self) -> Path:
        """The client certificate (qsAPI finds the key beside it as `client_key.pem`)."""
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        """The client certificate's private key."""
        return self.folder / "client_key.pem"

    def complete(self) -> bool:
        """Tell whether every file exists."""
        files = (self.root, self.root_key, self.server, self.server_key, self.client)
        return all(p.exists() for p in (*files, self.client_key))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Site licensing (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_dev_certificates(folder: Path, hosts: tuple[str, ...] = HOSTS) -> DevCertificates:
    """Make the dev CA, server and client certificates in `folder` unless they exist."""
    certs = DevCertificates(folder)
    if certs.complete():
        return certs
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Site licensing dev CA"))
        .issuer_name(_name("Site licensing dev CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key, client_key = _key(), _key()
    server = _issue(hosts[0], server_key, ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, names)
    client = _issue("QlikClient", client_key, ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write_key(certs.root_key, ca_key)
    _write_cert(certs.root, ca)
    _write_key(certs.server_key, server_key)
    _write_cert(certs.server, server)
    _write_key(certs.client_key, client_key)
    _write_cert(certs.client, client)
    return certs


def qsapi_example(certs: DevCertificates, host: str, port: int) -> str:
    """Return the lines `licensing up --tls` prints: a qsAPI call that works as it is."""
    code = (
        "from qsAPI import QRS; "
        f"qrs = QRS(proxy='{host}', port={port}, certificate='{certs.client}'); "
        "print(qrs.getAbout()['buildVersion'], qrs.count('user'))"
    )
    return f"""
HTTPS with a client certificate (CA {certs.root}; the client certificate acts as
INTERNAL\\sa_repository, RootAdmin, or as the user its X-Qlik-User header names):
  pip install qsapi
  python -c "{code}"
"""
