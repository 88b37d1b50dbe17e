# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A deployment's certificate authority and one certificate per state machine, kept in its secrets directory.

`plan_certificates` is the decision, over plain data: the CA is reused when present, made only for a first
deployment (a new CA for a running set would leave its members and clients trusting the old one); a machine's
certificate is reused while it is signed by that CA, names exactly the machine's addresses and is not due for
renewal, and issued again otherwise (new machine, changed address, new CA, expiry near, or a renewal asked for).
A certificate the machine itself holds is adopted, when the controller has none, under the same rule as a
controller one: a new controller (an AWX job's private data directory) then reissues nothing and restarts nothing.
The rest is the `cryptography` work and the files. The operator's own CA, given as PEM text, is stored there too,
and never over another CA (the running members trust the one that signed their certificates).
A site whose CA never hands out its key gives the CA certificate and each machine's certificate and key instead:
`given_problems` says what keeps each given certificate from being used (the same rule as a kept one, except that
extra names are allowed, since a corporate CA may add its own); nothing is issued then.
Each machine's API server has a certificate of its own, planned by the same rule: same CA, same names, but a subject
with OU=api-server, so that under x509 member authentication (mongod counts a certificate of the CA whose O/OU/DC
equal its own as a member) the key the API server holds is not a member's credential.

Layout: ca.crt, ca.key, certs/<machine>.crt, certs/<machine>.key, certs/api/<machine>.crt, certs/api/<machine>.key;
directories 0700, keys 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass, field

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    import traceback

    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()

CA_DAYS = 3650
CERT_DAYS = 825  # the longest server certificate lifetime common TLS clients accept
REUSE, ISSUE, REISSUE, ADOPT = "reused", "issued", "reissued", "adopted"
# Every machine's certificate names its loopback too: the mongod role's own client (mongod_member) reaches its
# member through 127.0.0.1, where the localhost exception applies, and verifies the name it connected to.
LOOPBACK_SANS = frozenset({"IP:127.0.0.1", "DNS:localhost"})
USAGES = frozenset({"serverAuth", "clientAuth"})
# The API server only serves with its certificate (it logs in to mongod with a password, presenting none).
API_USAGES = frozenset({"serverAuth"})
# The OU that sets an API server's certificate apart from the members' (their subject is O=stateserver.ha only).
API_OU = "api-server"


@dataclass
class CertPlan:
    ca: str                                              # REUSE, ISSUE, or "missing" (the set exists without it)
    machines: dict[str, str] = field(default_factory=dict)   # machine name -> REUSE, ADOPT, ISSUE or REISSUE


@dataclass(frozen=True)
class HeldCertificate:
    """What the decision needs to know of a machine's certificate signed by the CA in use."""

    sans: frozenset
    not_after: datetime.datetime


@dataclass(frozen=True)
class Renewal:
    """When a certificate that is otherwise fine is issued again: always (`force`, a rotation), or once fewer than
    `before_days` days are left until it expires (0: only an expired one), as of `now`."""

    now: datetime.datetime
    before_days: int = 0
    force: bool = False

    def due(self, not_after: datetime.datetime) -> bool:
        return self.force or not_after - self.now <= datetime.timedelta(days=self.before_days)


def plan_certificates(ca_present: bool, deployed: bool, wanted: dict[str, frozenset],
                      current: dict[str, HeldCertificate | None], renewal: Renewal,
                      on_hosts: dict[str, HeldCertificate | None] | None = None) -> CertPlan:
    """What to do with the CA and each machine's certificate.

    wanted: machine -> the SANs it must carry; current: machine -> its certificate when one exists and is signed by
    the CA in use, else None (absent, unreadable, or another CA's); on_hosts: machine -> the certificate the machine
    itself holds, in the same terms, read only where the controller has no usable one.
    """
    if not ca_present and deployed:
        return CertPlan("missing")
    plan = CertPlan(REUSE if ca_present else ISSUE)
    for name, sans in sorted(wanted.items()):
        have = current.get(name) if ca_present else None
        held = (on_hosts or {}).get(name) if ca_present else None
        if have is not None:
            plan.machines[name] = REUSE if _keeps(have, sans, renewal) else REISSUE
        elif held is not None and _keeps(held, sans, renewal):
            # The one the machine serves is as good as a controller copy: keeping it restarts nothing.
            plan.machines[name] = ADOPT
        else:
            plan.machines[name] = ISSUE if name not in current else REISSUE
    return plan


def _keeps(cert: HeldCertificate, sans: frozenset, renewal: Renewal) -> bool:
    return cert.sans == sans and not renewal.due(cert.not_after)


@dataclass(frozen=True)
class GivenCertificate:
    """What the decision needs to know of a certificate the operator gave for a machine (its key matched)."""

    sans: frozenset
    not_after: datetime.datetime
    signed: bool  # by the given CA
    usages: frozenset | None = None  # its extended key usages ("serverAuth", "clientAuth"); None: no limit
    membership: frozenset = frozenset()  # the (attribute, value) pairs of O, OU and DC in its subject


def given_problems(wanted: dict[str, frozenset], given: dict[str, GivenCertificate], now: datetime.datetime
                   ) -> dict[str, str]:
    """machine -> what is wrong with the certificate the operator gave for it, for every machine that cannot use
    its own; {} when all can. wanted: machine -> the SANs it must carry; given: the certificates that parsed with a
    matching key (a machine of `wanted` missing here has none). Extra SANs are fine: a corporate CA may add names,
    and clients only need theirs to be present. Nothing can be issued without the CA's key, so a missing or unusable
    certificate is an error, never a reason to make one."""
    problems = {}
    for name, sans in sorted(wanted.items()):
        cert = given.get(name)
        if cert is None:
            problems[name] = "no certificate is given"
        elif not cert.signed:
            problems[name] = "the given CA did not sign the given certificate"
        elif not sans <= cert.sans:
            problems[name] = ("the given certificate lacks the subject alternative names "
                              + ", ".join(sorted(sans - cert.sans)))
        elif cert.not_after <= now:
            problems[name] = f"the given certificate expired at {cert.not_after.isoformat()}"
        elif cert.usages is not None and not USAGES <= cert.usages:
            # mongod presents its certificate to its peers as a client too; they refuse one without clientAuth.
            problems[name] = ("the given certificate's extended key usage lacks "
                              + " and ".join(sorted(USAGES - cert.usages)))
    return problems


def given_api_problems(wanted: dict[str, frozenset], members: dict[str, GivenCertificate],
                       api: dict[str, GivenCertificate], now: datetime.datetime) -> dict[str, str]:
    """machine -> what is wrong with the API server certificate the operator gave for it (only machines in `api`
    are checked; one without falls back to its member certificate, which the caller warns about). As
    given_problems, but serverAuth is enough, and its subject's O/OU/DC must differ from the member certificate's:
    an equal set makes it a member credential under x509 member authentication, the very thing it is for."""
    problems = {}
    for name, cert in sorted(api.items()):
        if name not in wanted:
            continue
        if not cert.signed:
            problems[name] = "the given CA did not sign the given API certificate"
        elif not wanted[name] <= cert.sans:
            problems[name] = ("the given API certificate lacks the subject alternative names "
                              + ", ".join(sorted(wanted[name] - cert.sans)))
        elif cert.not_after <= now:
            problems[name] = f"the given API certificate expired at {cert.not_after.isoformat()}"
        elif cert.usages is not None and not API_USAGES <= cert.usages:
            problems[name] = "the given API certificate's extended key usage lacks serverAuth"
        elif name in members and cert.membership == members[name].membership:
            problems[name] = ("the given API certificate's subject has the same O, OU and DC as the machine's "
                              "certificate, so mongod would take it for a member's")
    return problems


def host_of(address: str) -> str:
    """The host of `host:port` or `[v6]:port`, without brackets."""
    host = address.rsplit(":", 1)[0] if not address.startswith("[") else address[1:address.index("]")]
    return host


def san_strings(addresses: list[str]) -> frozenset:
    """The SAN set for the hosts of these addresses, as 'IP:…' / 'DNS:…' strings (IPs compared canonically)."""
    out = set()
    for address in addresses:
        host = host_of(address)
        try:
            out.add(f"IP:{ipaddress.ip_address(host)}")
        except ValueError:
            out.add(f"DNS:{host.lower()}")
    return frozenset(out)


def machine_sans(addresses: list[str]) -> frozenset:
    """The SANs a state machine's certificate carries: the hosts of its addresses and the loopback names."""
    return san_strings(addresses) | LOOPBACK_SANS


def _san_entries(sans: frozenset) -> list:
    return [x509.IPAddress(ipaddress.ip_address(s[3:])) if s.startswith("IP:") else x509.DNSName(s[4:])
            for s in sorted(sans)]


def certificate_sans(cert) -> frozenset:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset([f"IP:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
                     + [f"DNS:{name.lower()}" for name in ext.get_values_for_type(x509.DNSName)])


def signed_by(cert, ca_cert) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def expiry(cert) -> datetime.datetime:
    """The end of the certificate's validity, timezone-aware (UTC)."""
    return cert.not_valid_after_utc


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (targets may run 3.8+)


def new_ca(deployment: str):
    """(certificate, key) of a new self-signed CA that can sign leaf certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stateserver.ha"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{deployment} deployment CA")])
    issued = utc_now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(issued - datetime.timedelta(minutes=5))
            .not_valid_after(issued + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def new_certificate(ca_cert, ca_key, machine: str, sans: frozenset, api: bool = False):
    """(certificate, key) for one machine: server and client use (mongod presents it both ways), its SANs only.
    With `api`, its API server's instead: the same names, server use only, and OU=api-server in the subject, so that
    mongod never counts it as a member's (the members' subject is left as it always was: nothing is re-issued)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issued = utc_now()
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stateserver.ha")]
    if api:
        subject.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, API_OU))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if not api:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([*subject, x509.NameAttribute(NameOID.COMMON_NAME, machine)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(issued - datetime.timedelta(minutes=5))
            .not_valid_after(issued + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_san_entries(sans)), critical=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


def pem_blocks(text: str) -> dict[str, str]:
    """The first certificate and the first private key of a PEM text, each as its own block ending in a newline:
    {"certificate": ..., "key": ...}, either missing when absent."""
    out = {}
    for match in _PEM_BLOCK.finditer(text):
        kind = "certificate" if match.group(1) == "CERTIFICATE" else "key" if "PRIVATE KEY" in match.group(1) else None
        if kind and kind not in out:
            out[kind] = match.group(0).strip() + "\n"
    return out


def load_pair(cert_pem: str, key_pem: str):
    """(certificate, key) from PEM text, or ValueError saying what is wrong. The key must be the certificate's."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise ValueError("is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("has no unencrypted PEM private key") from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ValueError("holds a key that is not the certificate's")
    return cert, key


def membership(cert) -> frozenset:
    """The (attribute, value) pairs of O, OU and DC in the certificate's subject: mongod's test of a member."""
    oids = {NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.DOMAIN_COMPONENT: "DC"}
    return frozenset((oids[a.oid], a.value) for a in cert.subject if a.oid in oids)


def is_api_certificate(cert) -> bool:
    return ("OU", API_OU) in membership(cert)


def held_on_host(pem: str, ca_cert, api: bool = False):
    """(HeldCertificate, certificate PEM, key PEM) for the one PEM a machine serves (certificate and key, as the
    mongod role installs it) when its key matches and the CA signed it; else None (it will be issued anew).
    With `api`, the API server's files, which are its own certificate only when the subject says so: before API
    certificates existed the API server served the member's, which must not be kept as the API server's."""
    blocks = pem_blocks(pem)
    if set(blocks) != {"certificate", "key"}:
        return None
    try:
        cert, _key = load_pair(blocks["certificate"], blocks["key"])
    except ValueError:
        return None
    if not signed_by(cert, ca_cert) or (api and not is_api_certificate(cert)):
        return None
    return HeldCertificate(certificate_sans(cert), expiry(cert)), blocks["certificate"], blocks["key"]


def given_certificate(cert_pem: str, key_pem: str, ca_cert) -> GivenCertificate:
    """The facts of a machine certificate given as PEM text, or ValueError saying what is wrong with the text."""
    cert, _key = load_pair(cert_pem, key_pem)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        usages = frozenset(name for name, oid in (("serverAuth", ExtendedKeyUsageOID.SERVER_AUTH),
                                                  ("clientAuth", ExtendedKeyUsageOID.CLIENT_AUTH)) if oid in eku)
    except x509.ExtensionNotFound:
        usages = None
    return GivenCertificate(certificate_sans(cert), expiry(cert), signed_by(cert, ca_cert), usages, membership(cert))


def load_given_ca(cert_pem: str, key_pem: str):
    """(certificate, key) of the operator's CA given as PEM text, or ValueError saying what is wrong."""
    cert, key = load_pair(cert_pem, key_pem)
    return check_ca(cert), key


def load_given_ca_certificate(cert_pem: str):
    """The operator's CA certificate given without its key, or ValueError saying what is wrong."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        raise ValueError("is not a PEM certificate") from None
    return check_ca(cert)


def check_ca(cert):
    """The certificate when it may sign others (basicConstraints CA:TRUE), else ValueError."""
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("is not a CA certificate (basicConstraints CA:TRUE)")
    return cert


class PkiDirError(Exception):
    """A file of the PKI cannot be read or written; the message says which."""


class PkiDir:
    """The CA and machine certificates inside a deployment's secrets directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ca_cert_path = os.path.join(path, "ca.crt")
        self.ca_key_path = os.path.join(path, "ca.key")

    def machine_paths(self, machine: str, api: bool = False) -> tuple[str, str]:
        """The certificate and key files of a machine, or with `api` of its API server (certs/api/)."""
        base = os.path.join(self.path, "certs", "api", machine) if api else os.path.join(self.path, "certs", machine)
        return base + ".crt", base + ".key"

    def ca_present(self) -> bool:
        return os.path.isfile(self.ca_cert_path) and os.path.isfile(self.ca_key_path)

    def load_ca(self):
        try:
            with open(self.ca_cert_path, "rb") as handle:
                cert = x509.load_pem_x509_certificate(handle.read())
            with open(self.ca_key_path, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise PkiDirError(f"cannot use the deployment CA in {self.path} (ca.crt, ca.key): {exc}") from None
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise PkiDirError(f"{self.ca_key_path} is not the key of {self.ca_cert_path}")
        return cert, key

    def load_ca_certificate(self):
        """ca.crt alone (an operator's CA whose key is not given), or PkiDirError."""
        try:
            with open(self.ca_cert_path, "rb") as handle:
                return check_ca(x509.load_pem_x509_certificate(handle.read()))
        except (OSError, ValueError) as exc:
            raise PkiDirError(f"cannot use the CA certificate {self.ca_cert_path}: {exc}") from None

    def held(self, machine: str, ca_cert, api: bool = False) -> HeldCertificate | None:
        """The machine's (or its API server's) certificate when it and its key exist and the CA signed it, else
        None."""
        cert_path, key_path = self.machine_paths(machine, api)
        try:
            with open(cert_path, "rb") as handle:
                cert = x509.load_pem_x509_certificate(handle.read())
            with open(key_path, "rb") as handle:
                key = serialization.load_pem_private_key(handle.read(), password=None)
        except (OSError, ValueError, TypeError):
            return None
        if (cert.public_key().public_numbers() != key.public_key().public_numbers() or not signed_by(cert, ca_cert)
                or (api and not is_api_certificate(cert))):
            return None
        return HeldCertificate(certificate_sans(cert), expiry(cert))

    def has_files(self, machine: str, api: bool = False) -> bool:
        return any(os.path.exists(p) for p in self.machine_paths(machine, api))

    def given_ca_stored(self, cert, key=None) -> bool:
        """Whether the given CA is already the one in the directory, both files (False when either is missing; only
        ca.crt when its key is not given). A different CA there is an error: it may have signed the running members'
        certificates."""
        try:
            with open(self.ca_cert_path, "rb") as handle:
                cert_same = x509.load_pem_x509_certificate(handle.read()) == cert
        except FileNotFoundError:
            cert_same = None
        except (OSError, ValueError, TypeError):
            cert_same = False
        key_same = True  # the certificate alone is given: it is the one compared
        if key is not None:
            try:
                with open(self.ca_key_path, "rb") as handle:
                    disk_key = serialization.load_pem_private_key(handle.read(), password=None)
                key_same = disk_key.public_key().public_numbers() == key.public_key().public_numbers()
            except FileNotFoundError:
                key_same = None
            except (OSError, ValueError, TypeError):
                key_same = False
        if False in (cert_same, key_same):
            raise PkiDirError(
                f"The CA given in variables is not the CA in {self.path} (ca.crt, ca.key), which may have signed the "
                "running members' certificates, so neither was changed. Give the CA of that directory, or move the "
                "directory's ca.crt and ca.key away if the given CA really is the deployment's.")
        return cert_same is True and key_same is True

    def write(self, cert_path: str, key_path: str, cert, key) -> None:
        """Key first and 0600 from its creation; the certificate after it. A re-issue replaces both."""
        self.write_pem(cert_path, key_path, cert.public_bytes(serialization.Encoding.PEM),
                       key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))

    def write_pem(self, cert_path: str, key_path: str, cert_pem: bytes, key_pem: bytes | None) -> None:
        """write() for PEM text as it is (an adopted or given pair keeps its exact bytes, so the copy a role
        makes of it on the host is the file the host already has). Without key_pem, the certificate alone."""
        try:
            os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
            # makedirs gives the mode to the last directory only (certs/ above certs/api/ would get the umask's).
            directory = self.path
            os.chmod(directory, 0o700)
            for part in os.path.relpath(os.path.dirname(key_path), self.path).split(os.sep):
                if part not in (".", ".."):
                    directory = os.path.join(directory, part)
                    os.chmod(directory, 0o700)
            for path, data, mode in ((key_path, key_pem, 0o600), (cert_path, cert_pem, 0o644)):
                if data is None:
                    continue
                tmp = path + ".new"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.chmod(tmp, mode)
                os.replace(tmp, path)
        except OSError as exc:
            raise PkiDirError(f"cannot write {exc.filename or key_path}: {exc.strerror or exc}") from None
