"""The API server's own certificate (issue 14): the same CA and names as its machine's, a subject mongod does not
take for a member's, server use only, and the same keep/adopt/renew rule."""

from __future__ import annotations

import datetime
import os
import stat

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._pki import (
    ADOPT,
    ISSUE,
    REISSUE,
    REUSE,
    GivenCertificate,
    HeldCertificate,
    PkiDir,
    Renewal,
    certificate_sans,
    expiry,
    given_api_problems,
    held_on_host,
    is_api_certificate,
    machine_sans,
    membership,
    new_ca,
    new_certificate,
    plan_certificates,
    signed_by,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

SANS = machine_sans(["192.0.2.11:37017", "sm1.example.net:17070"])
NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)  # noqa: UP017 (as the module util)
FRESH = NOW + datetime.timedelta(days=800)
MEMBER = frozenset({("O", "stateserver.ha")})
API = MEMBER | {("OU", "api-server")}


@pytest.fixture(name="ca", scope="module")
def fixture_ca():
    return new_ca("stateserver")


def pem(cert, key) -> str:
    return (cert.public_bytes(serialization.Encoding.PEM).decode()
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode())


def test_the_api_certificate_has_the_machines_names_and_ca_but_not_a_members_subject(ca):
    member, _key = new_certificate(*ca, "sm1", SANS)
    api, _api_key = new_certificate(*ca, "sm1", SANS, api=True)
    assert signed_by(api, ca[0]) and certificate_sans(api) == certificate_sans(member) == SANS
    # mongod's member test compares the O/OU/DC set: the member's is unchanged, the API server's differs.
    assert membership(member) == MEMBER and membership(api) == API
    assert not is_api_certificate(member) and is_api_certificate(api)
    assert api.subject.rfc4514_string() == "CN=sm1,OU=api-server,O=stateserver.ha"
    # It only serves: the API server presents no certificate to mongod (it logs in with its password).
    assert list(api.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) \
        == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize(("current", "on_host", "renewal", "action"), [
    # An existing deployment: the controller has the machines' certificates only, so the API one is issued.
    ({}, None, Renewal(NOW), ISSUE),
    ({"sm1": HeldCertificate(SANS, FRESH)}, None, Renewal(NOW), REUSE),
    ({}, HeldCertificate(SANS, FRESH), Renewal(NOW), ADOPT),
    # The same renewal rule as the machine's: due, expired, forced by a rotation, or a changed address.
    ({"sm1": HeldCertificate(SANS, NOW + datetime.timedelta(days=10))}, None, Renewal(NOW, 30), REISSUE),
    ({"sm1": HeldCertificate(SANS, NOW)}, None, Renewal(NOW), REISSUE),
    ({"sm1": HeldCertificate(SANS, FRESH)}, None, Renewal(NOW, force=True), REISSUE),
    ({"sm1": HeldCertificate(machine_sans(["192.0.2.99:37017"]), FRESH)}, None, Renewal(NOW), REISSUE),
])
def test_the_api_certificate_is_kept_and_renewed_by_the_machines_rule(current, on_host, renewal, action):
    assert plan_certificates(True, True, {"sm1": SANS}, current, renewal, {"sm1": on_host}).machines \
        == {"sm1": action}


def test_an_api_server_serving_its_machines_certificate_holds_no_api_certificate(tmp_path, ca):
    """A deployment from before API certificates: the API server's files are the member's. They must be replaced,
    never adopted (nor kept from the controller) as the API server's own."""
    member, member_key = new_certificate(*ca, "sm1", SANS)
    api, api_key = new_certificate(*ca, "sm1", SANS, api=True)
    assert held_on_host(pem(member, member_key), ca[0], api=True) is None
    assert held_on_host(pem(member, member_key), ca[0]) is not None
    assert held_on_host(pem(api, api_key), ca[0], api=True)[0] == HeldCertificate(SANS, expiry(api))

    pki = PkiDir(str(tmp_path / "secrets"))
    pki.write(*pki.machine_paths("sm1"), member, member_key)
    pki.write(*pki.machine_paths("sm1", api=True), member, member_key)
    assert pki.held("sm1", ca[0], api=True) is None
    pki.write(*pki.machine_paths("sm1", api=True), api, api_key)
    assert pki.held("sm1", ca[0], api=True) == HeldCertificate(SANS, expiry(api))
    assert pki.held("sm1", ca[0]) == HeldCertificate(SANS, expiry(member))
    # Its own directory, as private as certs/.
    assert pki.machine_paths("sm1", api=True)[0] == os.path.join(pki.path, "certs", "api", "sm1.crt")
    for directory in ("certs", os.path.join("certs", "api")):
        assert stat.S_IMODE(os.stat(os.path.join(pki.path, directory)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(pki.machine_paths("sm1", api=True)[1]).st_mode) == 0o600


@pytest.mark.parametrize(("api", "problem"), [
    (GivenCertificate(SANS, FRESH, True, frozenset({"serverAuth"}), API), None),
    (GivenCertificate(SANS, FRESH, True, None, API), None),
    (GivenCertificate(SANS, FRESH, True, None, MEMBER),
     ("the given API certificate's subject has the same O, OU and DC as the machine's certificate, so mongod "
      "would take it for a member's")),
    (GivenCertificate(SANS, FRESH, False, None, API), "the given CA did not sign the given API certificate"),
    (GivenCertificate(SANS - {"DNS:localhost"}, FRESH, True, None, API),
     "the given API certificate lacks the subject alternative names DNS:localhost"),
    (GivenCertificate(SANS, NOW, True, None, API), f"the given API certificate expired at {NOW.isoformat()}"),
    (GivenCertificate(SANS, FRESH, True, frozenset({"clientAuth"}), API),
     "the given API certificate's extended key usage lacks serverAuth"),
])
def test_what_keeps_a_given_api_certificate_from_being_used(api, problem):
    members = {"sm1": GivenCertificate(SANS, FRESH, True, None, MEMBER)}
    expected = {"sm1": problem} if problem else {}
    assert given_api_problems({"sm1": SANS}, members, {"sm1": api}, NOW) == expected
    # Without one the machine's certificate serves the API (the module warns): not a problem here.
    assert given_api_problems({"sm1": SANS}, members, {}, NOW) == {}
