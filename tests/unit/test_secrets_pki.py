"""The deployment CA and the machines' certificates: the decision table, and the files read back and parsed."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._pki import (
    CERT_DAYS,
    ISSUE,
    REISSUE,
    REUSE,
    HeldCertificate,
    PkiDir,
    PkiDirError,
    Renewal,
    certificate_sans,
    expiry,
    machine_sans,
    new_ca,
    new_certificate,
    plan_certificates,
    san_strings,
    signed_by,
)
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

A = frozenset({"IP:192.0.2.11"})
B = frozenset({"IP:192.0.2.99"})
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)  # noqa: UP017 (as the module util)
FRESH = NOW + datetime.timedelta(days=800)
NO_RENEWAL = Renewal(NOW)


def held(sans, not_after=FRESH):
    return HeldCertificate(sans, not_after)


@pytest.mark.parametrize(("ca_present", "deployed", "wanted", "current", "ca", "machines"), [
    # First deployment: a CA and a certificate per machine.
    (False, False, {"sm1": A}, {}, ISSUE, {"sm1": ISSUE}),
    # The set exists and the CA is gone: nothing is made.
    (False, True, {"sm1": A}, {}, "missing", {}),
    # Reused while the SANs match and the CA signed it; a changed address or another CA's certificate re-issues.
    (True, True, {"sm1": A}, {"sm1": held(A)}, REUSE, {"sm1": REUSE}),
    (True, True, {"sm1": B}, {"sm1": held(A)}, REUSE, {"sm1": REISSUE}),
    (True, True, {"sm1": A}, {"sm1": None}, REUSE, {"sm1": REISSUE}),
    (True, True, {"sm1": A, "sm4": B}, {"sm1": held(A)}, REUSE, {"sm1": REUSE, "sm4": ISSUE}),
    # An expired certificate is issued again even when no renewal is asked for.
    (True, True, {"sm1": A}, {"sm1": held(A, NOW - datetime.timedelta(seconds=1))}, REUSE, {"sm1": REISSUE}),
    # A new CA (first deployment again after a wipe) re-issues whatever certificates lie around.
    (False, False, {"sm1": A}, {"sm1": None}, ISSUE, {"sm1": REISSUE}),
])
def test_what_happens_to_the_ca_and_each_certificate(ca_present, deployed, wanted, current, ca, machines):
    plan = plan_certificates(ca_present, deployed, wanted, current, NO_RENEWAL)
    assert plan.ca == ca and plan.machines == machines


@pytest.mark.parametrize(("days_left", "before_days", "force", "due"), [
    (800, 0, False, False),
    (0, 0, False, True),         # expires this very moment
    (-3, 0, False, True),        # expired
    (30, 30, False, True),       # at most before_days left: due
    (30.01, 30, False, False),
    (800, CERT_DAYS, False, True),   # renew_before_days at a certificate's whole lifetime renews every one
    (800, 0, True, True),        # a rotation renews whatever is left
])
def test_when_a_certificate_is_due_for_renewal(days_left, before_days, force, due):
    renewal = Renewal(NOW, before_days, force)
    assert renewal.due(NOW + datetime.timedelta(days=days_left)) is due
    # The plan follows the same rule, and only for a certificate that would otherwise be reused.
    plan = plan_certificates(True, True, {"sm1": A}, {"sm1": held(A, NOW + datetime.timedelta(days=days_left))},
                             renewal)
    assert plan.machines == {"sm1": REISSUE if due else REUSE}


def test_a_renewal_keeps_the_ca_and_issues_new_machines_as_new():
    plan = plan_certificates(True, True, {"sm1": A, "sm2": B}, {"sm1": held(A)}, Renewal(NOW, force=True))
    assert plan.ca == REUSE and plan.machines == {"sm1": REISSUE, "sm2": ISSUE}
    # A first deployment with a renewal asked for is still a first deployment.
    plan = plan_certificates(False, False, {"sm1": A}, {}, Renewal(NOW, force=True))
    assert plan.ca == ISSUE and plan.machines == {"sm1": ISSUE}


def test_sans_are_the_hosts_of_the_addresses():
    assert san_strings(["192.0.2.11:37017", "192.0.2.11:17070"]) == {"IP:192.0.2.11"}
    assert san_strings(["[2001:db8::1]:37017", "SM1.example.net:17070"]) == {"IP:2001:db8::1", "DNS:sm1.example.net"}


def test_a_machine_certificate_also_names_the_loopback_its_own_member_is_reached_through():
    # mongod_member connects to 127.0.0.1 with TLS and checks the name it connected to against the SANs.
    assert machine_sans(["192.0.2.11:37017", "sm1.example.net:17070"]) \
        == {"IP:192.0.2.11", "DNS:sm1.example.net", "IP:127.0.0.1", "DNS:localhost"}
    assert machine_sans(["127.0.0.1:37017", "LOCALHOST:17070"]) == {"IP:127.0.0.1", "DNS:localhost"}


def test_issued_files_parse_verify_and_are_private(tmp_path):
    pki = PkiDir(str(tmp_path / "secrets"))
    ca_cert, ca_key = new_ca("stateserver")
    pki.write(pki.ca_cert_path, pki.ca_key_path, ca_cert, ca_key)
    sans = san_strings(["192.0.2.11:37017", "sm1.example.net:17070"])
    cert_path, key_path = pki.machine_paths("sm1")
    pki.write(cert_path, key_path, *new_certificate(ca_cert, ca_key, "sm1", sans))

    for directory in (pki.path, os.path.dirname(key_path)):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for key in (pki.ca_key_path, key_path):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    loaded_ca = pki.load_ca()[0]
    with open(cert_path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    assert signed_by(cert, loaded_ca)
    assert loaded_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.11")]
    assert san.get_values_for_type(x509.DNSName) == ["sm1.example.net"]
    usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert pki.held("sm1", loaded_ca) == HeldCertificate(sans, expiry(cert))
    assert sans == certificate_sans(cert)
    lifetime = expiry(cert) - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=CERT_DAYS, minutes=5)

    # Another deployment's CA did not sign it, so it would be re-issued under that CA.
    other_ca = new_ca("other")[0]
    assert not signed_by(cert, other_ca) and pki.held("sm1", other_ca) is None
    assert pki.held("sm2", loaded_ca) is None


def test_a_reissued_certificate_has_a_new_key_and_serial_under_the_same_ca(tmp_path):
    pki = PkiDir(str(tmp_path))
    ca_cert, ca_key = new_ca("stateserver")
    sans = machine_sans(["192.0.2.11:37017"])
    cert_path, key_path = pki.machine_paths("sm1")
    first, first_key = new_certificate(ca_cert, ca_key, "sm1", sans)
    pki.write(cert_path, key_path, first, first_key)
    second, second_key = new_certificate(ca_cert, ca_key, "sm1", sans)
    pki.write(cert_path, key_path, second, second_key)
    with open(cert_path, "rb") as handle:
        written = x509.load_pem_x509_certificate(handle.read())
    assert written.serial_number == second.serial_number != first.serial_number
    assert written.public_key().public_numbers() != first.public_key().public_numbers()
    assert pki.held("sm1", ca_cert) == HeldCertificate(sans, expiry(second))
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600


def test_a_ca_key_that_does_not_match_is_refused(tmp_path):
    pki = PkiDir(str(tmp_path))
    ca_cert = new_ca("stateserver")[0]
    other_key = new_ca("other")[1]
    pki.write(pki.ca_cert_path, pki.ca_key_path, ca_cert, other_key)
    with pytest.raises(PkiDirError, match="is not the key of"):
        pki.load_ca()
