"""The deployment CA and the machines' certificates: the decision table, and the files read back and parsed."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._pki import (
    ADOPT,
    CERT_DAYS,
    ISSUE,
    REISSUE,
    REUSE,
    GivenCertificate,
    HeldCertificate,
    PkiDir,
    PkiDirError,
    Renewal,
    certificate_sans,
    expiry,
    given_certificate,
    given_problems,
    held_on_host,
    load_given_ca,
    load_given_ca_certificate,
    machine_sans,
    new_ca,
    new_certificate,
    plan_certificates,
    san_strings,
    signed_by,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
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


# A certificate the machine holds, when the controller has none: kept exactly when a controller copy would be.
@pytest.mark.parametrize(("ca_present", "current", "on_host", "renewal", "action"), [
    (True, {}, held(A), NO_RENEWAL, ADOPT),
    # The controller's files are there but unusable (another CA's, half written): the machine's valid one is kept.
    (True, {"sm1": None}, held(A), NO_RENEWAL, ADOPT),
    # Wrong SANs (the machine's address changed), due for renewal, expired, or a rotation: issued.
    (True, {}, held(B), NO_RENEWAL, ISSUE),
    (True, {}, held(A, NOW + datetime.timedelta(days=10)), Renewal(NOW, 30), ISSUE),
    (True, {}, held(A, NOW - datetime.timedelta(seconds=1)), NO_RENEWAL, ISSUE),
    (True, {}, held(A), Renewal(NOW, force=True), ISSUE),
    # Nothing usable held (missing, another CA's, a key that is not the certificate's: held_on_host gives None).
    (True, {}, None, NO_RENEWAL, ISSUE),
    (True, {"sm1": None}, None, NO_RENEWAL, REISSUE),
    # A new CA: whatever a machine holds is another CA's.
    (False, {}, held(A), NO_RENEWAL, ISSUE),
])
def test_a_certificate_held_on_the_machine_is_adopted_only_when_it_would_be_reused(ca_present, current, on_host,
                                                                                   renewal, action):
    plan = plan_certificates(ca_present, False, {"sm1": A}, current, renewal, {"sm1": on_host})
    assert plan.machines == {"sm1": action}


def test_a_controller_certificate_wins_over_the_one_held_on_the_machine():
    plan = plan_certificates(True, True, {"sm1": A}, {"sm1": held(A)}, NO_RENEWAL, {"sm1": held(A)})
    assert plan.machines == {"sm1": REUSE}


def pem(cert, key) -> tuple[str, str]:
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_what_a_machine_holds_counts_only_with_its_own_key_and_the_ca_signature():
    ca_cert, ca_key = new_ca("stateserver")
    sans = machine_sans(["192.0.2.11:37017"])
    cert, key = new_certificate(ca_cert, ca_key, "sm1", sans)
    cert_pem, key_pem = pem(cert, key)
    # As the mongod role writes mongod.pem: the certificate, then the key.
    found = held_on_host(cert_pem + key_pem, ca_cert)
    assert found == (HeldCertificate(sans, expiry(cert)), cert_pem, key_pem)
    other_key = pem(cert, new_certificate(ca_cert, ca_key, "sm1", sans)[1])[1]
    assert held_on_host(cert_pem + other_key, ca_cert) is None
    assert held_on_host(cert_pem + key_pem, new_ca("other")[0]) is None
    assert held_on_host(cert_pem, ca_cert) is None
    assert held_on_host("not a PEM", ca_cert) is None


def test_the_operators_ca_is_stored_once_and_never_over_another_ca(tmp_path):
    pki = PkiDir(str(tmp_path / "secrets"))
    given = new_ca("operator")
    cert_pem, key_pem = pem(*given)
    loaded = load_given_ca(cert_pem, key_pem)
    assert loaded[0] == given[0]
    # Absent: to be written. Written: the same CA, nothing to do.
    assert pki.given_ca_stored(*loaded) is False
    pki.write_pem(pki.ca_cert_path, pki.ca_key_path, cert_pem.encode(), key_pem.encode())
    assert pki.given_ca_stored(*loaded) is True
    assert stat.S_IMODE(os.stat(pki.ca_key_path).st_mode) == 0o600
    with open(pki.ca_cert_path) as handle:
        assert handle.read() == cert_pem
    # Only one of the two files there, and it matches: the pair is written again.
    os.remove(pki.ca_key_path)
    assert pki.given_ca_stored(*loaded) is False
    # Another CA in the directory (it may have signed the members' certificates): refused.
    pki.write(pki.ca_cert_path, pki.ca_key_path, *new_ca("stateserver"))
    with pytest.raises(PkiDirError, match="is not the CA in"):
        pki.given_ca_stored(*loaded)


@pytest.mark.parametrize(("which", "message"), [
    ("garbage-cert", "is not a PEM certificate"),
    ("garbage-key", "has no unencrypted PEM private key"),
    ("other-key", "is not the certificate's"),
    ("leaf", "is not a CA certificate"),
])
def test_a_given_ca_that_cannot_be_one_is_refused(which, message):
    ca_cert, ca_key = new_ca("operator")
    leaf, leaf_key = new_certificate(ca_cert, ca_key, "sm1", A)
    cert_pem, key_pem = {
        "garbage-cert": ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", pem(ca_cert, ca_key)[1]),
        "garbage-key": (pem(ca_cert, ca_key)[0], "not a key"),
        "other-key": (pem(ca_cert, ca_key)[0], pem(leaf, leaf_key)[1]),
        "leaf": pem(leaf, leaf_key),
    }[which]
    with pytest.raises(ValueError, match=message):
        load_given_ca(cert_pem, key_pem)


# Operator-issued certificates: the operator's CA keeps its key, so each machine's certificate is given and only
# checked. Extra names are fine (a corporate CA may add its own); a missing required name, another CA's signature,
# an expired certificate or none at all is an error naming the machine, and nothing is ever issued.
AB = A | B
LOOP = machine_sans(["192.0.2.11:37017"])


@pytest.mark.parametrize(("wanted", "given", "problems"), [
    ({"sm1": A}, {"sm1": GivenCertificate(A, FRESH, True)}, {}),
    ({"sm1": A}, {"sm1": GivenCertificate(AB, FRESH, True)}, {}),
    ({"sm1": LOOP}, {"sm1": GivenCertificate(A, FRESH, True)},
     {"sm1": "the given certificate lacks the subject alternative names DNS:localhost, IP:127.0.0.1"}),
    ({"sm1": AB}, {"sm1": GivenCertificate(A, FRESH, True)},
     {"sm1": "the given certificate lacks the subject alternative names IP:192.0.2.99"}),
    ({"sm1": A}, {"sm1": GivenCertificate(A, FRESH, False)},
     {"sm1": "the given CA did not sign the given certificate"}),
    ({"sm1": A}, {"sm1": GivenCertificate(A, NOW, True)},
     {"sm1": f"the given certificate expired at {NOW.isoformat()}"}),
    ({"sm1": A, "sm2": B}, {"sm1": GivenCertificate(A, FRESH, True)}, {"sm2": "no certificate is given"}),
    # Extended key usages, when the certificate limits them, must allow both directions.
    ({"sm1": A}, {"sm1": GivenCertificate(A, FRESH, True, frozenset({"serverAuth", "clientAuth", "codeSigning"}))},
     {}),
    ({"sm1": A}, {"sm1": GivenCertificate(A, FRESH, True, frozenset({"serverAuth"}))},
     {"sm1": "the given certificate's extended key usage lacks clientAuth"}),
    # A certificate for a machine that is not wanted (a spare during a rotation) is no problem.
    ({"sm1": A}, {"sm1": GivenCertificate(A, FRESH, True), "sm9": GivenCertificate(B, NOW, False)}, {}),
])
def test_what_keeps_a_given_certificate_from_being_used(wanted, given, problems):
    assert given_problems(wanted, given, NOW) == problems


def test_a_given_certificate_is_read_with_its_key_and_checked_against_the_given_ca():
    ca_cert, ca_key = new_ca("corporate")
    cert, key = new_certificate(ca_cert, ca_key, "sm1", LOOP | B)
    cert_pem, key_pem = pem(cert, key)
    both = frozenset({"serverAuth", "clientAuth"})
    assert given_certificate(cert_pem, key_pem, ca_cert) == GivenCertificate(LOOP | B, expiry(cert), True, both,
                                                                             frozenset({("O", "stateserver.ha")}))
    assert given_certificate(cert_pem, key_pem, new_ca("other")[0]).signed is False
    other_key = pem(cert, new_certificate(ca_cert, ca_key, "sm1", LOOP)[1])[1]
    with pytest.raises(ValueError, match="is not the certificate's"):
        given_certificate(cert_pem, other_key, ca_cert)
    with pytest.raises(ValueError, match="is not a PEM certificate"):
        given_certificate("garbage", key_pem, ca_cert)


def test_a_ca_given_without_its_key_is_stored_alone_and_never_over_another_ca(tmp_path):
    pki = PkiDir(str(tmp_path / "secrets"))
    ca_cert, ca_key = new_ca("corporate")
    cert_pem = pem(ca_cert, ca_key)[0]
    assert load_given_ca_certificate(cert_pem) == ca_cert
    assert pki.given_ca_stored(ca_cert) is False
    pki.write_pem(pki.ca_cert_path, pki.ca_key_path, cert_pem.encode(), None)
    assert pki.given_ca_stored(ca_cert) is True
    assert not os.path.exists(pki.ca_key_path)
    assert pki.load_ca_certificate() == ca_cert
    other = new_ca("stateserver")
    with pytest.raises(PkiDirError, match="is not the CA in"):
        pki.given_ca_stored(other[0])
    leaf = new_certificate(ca_cert, ca_key, "sm1", A)[0]
    with pytest.raises(ValueError, match="is not a CA certificate"):
        load_given_ca_certificate(pem(leaf, ca_key)[0])
