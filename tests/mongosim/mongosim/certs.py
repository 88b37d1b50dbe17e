"""A throwaway private CA and leaf certificates for TLS tests (needs the ``cryptography`` package).

``make_ca(directory)`` writes ``ca.pem`` (certificate) and keeps the CA key in memory; ``ca.issue(name, ips)``
writes ``<name>.pem`` holding certificate and key, as mongod's ``certificateKeyFile`` and pymongo's
``tlsCertificateKeyFile`` take them. Leaves carry the IP addresses as subjectAltName and both serverAuth and
clientAuth, so one file serves a member inbound, towards other members, and a client. Every subject carries
O=mongosim tests unless ``organization`` says otherwise: with x509 member authentication, a certificate whose O
differs from the members' is not a member.
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID = datetime.timedelta(days=2)
ORGANIZATION = "mongosim tests"


def _name(common_name: str, organization: str = ORGANIZATION) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class CA:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def path(self) -> str:
        return str(self.directory / "ca.pem")

    def issue(self, name: str, ips: list[str], dns: tuple[str, ...] = (), organization: str = ORGANIZATION) -> str:
        """A leaf for ``ips`` (and ``dns`` names) signed by this CA; returns the path of its PEM (cert + key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        san = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
        cert = (x509.CertificateBuilder()
                .subject_name(_name(name, organization)).issuer_name(self.cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        path = self.directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key))
        path.chmod(0o600)
        return str(path)


def make_ca(directory: str | Path, name: str = "mongosim test CA") -> CA:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    ca = CA(directory, key, cert)
    Path(ca.path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca
