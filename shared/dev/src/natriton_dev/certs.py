"""Throw-away X.509 certificates for tests and local stacks: a CA, servers for 127.0.0.1/localhost, clients.

Made with the ``cryptography`` package (ECDSA P-256, valid for a day), written as PEM files::

    ca = TestCA.create(tmp_path / "tls")
    server = ca.issue("nats", server=True)    # SAN: localhost, 127.0.0.1
    client = ca.issue("router")              # clientAuth, CN=router
    # ca.cert_file, server.cert_file, server.key_file, ...

Never use these outside tests: the CA key lies beside its certificate, unencrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)
LOCAL_NAMES = ("localhost",)
LOCAL_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertFiles:
    """A certificate and its private key as PEM files."""

    name: str
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "natriton tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class TestCA:
    """A self-signed CA that issues server and client certificates into ``directory``."""

    __test__ = False  # not a pytest test class

    directory: Path
    cert_file: Path
    key_file: Path
    _cert: x509.Certificate
    _key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, directory: Path, name: str = "natriton test CA") -> TestCA:
        """A new CA (``ca.pem``, ``ca-key.pem``) in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        cert_file, key_file = directory / "ca.pem", directory / "ca-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_file)
        return cls(directory, cert_file, key_file, cert, key)

    def issue(
        self,
        name: str,
        *,
        server: bool = False,
        dns_names: tuple[str, ...] = LOCAL_NAMES,
        ip_addresses: tuple[str, ...] = LOCAL_ADDRESSES,
        email: str = "",
    ) -> CertFiles:
        """A certificate ``CN=name`` signed by this CA: ``server`` ones carry ``dns_names`` and ``ip_addresses`` as
        subject alternative names and serve TLS; client ones (the default) authenticate a client (mTLS), with
        ``email`` as an rfc822 SAN when given. Written to ``<name>.pem`` and ``<name>-key.pem``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        sans: list[x509.GeneralName] = []
        if server:
            sans += [x509.DNSName(n) for n in dns_names]
            sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if email:
            sans.append(x509.RFC822Name(email))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(name, self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files.key_file)
        return files


def new_user_nkey(seed_file: Path) -> str:
    """A new NKey user: its seed (``SU...``) written to ``seed_file`` (mode 0600), its public key (``U...``)
    returned for the server's config. Needs the ``nkeys`` package (nats-py's NKey support)."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    seed_file = Path(seed_file)
    seed_file.parent.mkdir(parents=True, exist_ok=True)
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(0o600)
    public: bytes = nkeys.from_seed(bytearray(seed)).public_key
    return public.decode()
