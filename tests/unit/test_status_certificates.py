"""Certificate expiry in the status rows and table (_status.py): days left, the warning threshold, the notes and the
CERT column, which appears only when some certificate was read (never with TLS off)."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _status
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
TAG = "stateserver-machine"
RECORDS = [MachineRecord(f"sm{i}", f"10.0.0.{i}:37017", f"10.0.0.{i}:17070", True) for i in (1, 2, 3)]
CONFIG = {"members": [{"_id": i, "host": f"10.0.0.{i}:37017", "tags": {TAG: f"sm{i}"}} for i in (1, 2, 3)]}
STATUS = {"members": [{"name": f"10.0.0.{i}:37017", "state": 1 if i == 1 else 2, "health": 1} for i in (1, 2, 3)]}


def expiry(days: float, warning: int = 30) -> _status.CertificateExpiry:
    return _status.certificate_expiry(NOW + datetime.timedelta(days=days), NOW, warning)


def rows(served: dict[str, _status.CertificateExpiry]) -> list[_status.StatusRow]:
    return _status.with_certificates(_status.status_rows(RECORDS, CONFIG, STATUS, api_answers={}), served)


@pytest.mark.parametrize(("days", "warning", "expired", "due"), [
    (400, 30, False, False),
    (30, 30, False, False),     # exactly at the threshold: not yet
    (29.99, 30, False, True),
    (0.5, 30, False, True),
    (0, 30, True, True),        # notAfter is the last valid instant: at it, expired
    (-3, 30, True, True),
    (5, 0, False, False),       # a threshold of 0 flags expired certificates only
    (-1, 0, True, True),
])
def test_expired_and_due_against_the_threshold(days, warning, expired, due):
    cert = expiry(days, warning)
    assert (cert.expired, cert.due) == (expired, due)
    assert cert.days_left == pytest.approx(days)


def test_not_after_is_reported_in_utc_whatever_zone_it_came_in():
    plus2 = datetime.timezone(datetime.timedelta(hours=2))
    cert = _status.certificate_expiry(datetime.datetime(2027, 1, 1, 14, 0, tzinfo=plus2), NOW, 30)
    assert cert.not_after.isoformat() == "2027-01-01T12:00:00+00:00"


def test_without_certificates_rows_and_table_are_as_without_tls():
    plain = _status.status_rows(RECORDS, CONFIG, STATUS)
    assert _status.with_certificates(plain, {}) == plain
    assert all(r.certificate_dict() == {"mongo_certificate_not_after": None, "mongo_certificate_days_left": None,
                                        "api_certificate_not_after": None, "api_certificate_days_left": None}
               for r in plain)
    table = _status.status_table(plain)
    assert "CERT" not in table[0] and table[0].split() == list(_status.TABLE_COLUMNS)


def test_each_row_gets_the_certificates_served_at_its_mongod_and_api_addresses():
    served = {"10.0.0.1:37017": expiry(400), "10.0.0.1:17070": expiry(399.5), "10.0.0.2:37017": expiry(10.25)}
    sm1, sm2, sm3 = rows(served)
    assert sm1.certificate_dict() == {
        "mongo_certificate_not_after": "2028-01-04T12:00:00+00:00", "mongo_certificate_days_left": 400.0,
        "api_certificate_not_after": "2028-01-04T00:00:00+00:00", "api_certificate_days_left": 399.5}
    assert sm1.note == ""
    assert sm2.api_certificate is None and sm2.mongo_certificate.days_left == pytest.approx(10.25)
    assert sm3.mongo_certificate is None and sm3.api_certificate is None


def test_a_due_certificate_is_named_with_its_date_and_what_to_run():
    shared = expiry(12.5)
    sm1, sm2, sm3 = rows({"10.0.0.1:37017": shared, "10.0.0.1:17070": shared,
                          "10.0.0.2:37017": expiry(200), "10.0.0.2:17070": expiry(-2),
                          "10.0.0.3:37017": expiry(0.2)})
    # One certificate for both services: one sentence.
    assert sm1.note == ("the mongod and API certificate expires in 12 days (2026-12-13): renew it with "
                        "rotate-certificates.yml")
    assert sm2.note == "the API certificate EXPIRED on 2026-11-28: renew it with rotate-certificates.yml"
    assert sm3.note.startswith("the mongod certificate expires within a day (2026-11-30)")


def test_the_expiry_note_follows_the_note_already_there():
    config = {"members": [{"_id": 1, "host": "10.0.0.1:37017", "tags": {TAG: "sm1"}}]}
    status = {"members": [{"name": "10.0.0.1:37017", "state": 8, "health": 0, "lastHeartbeatMessage": "refused"}]}
    plain = _status.status_rows(RECORDS[:1], config, status)
    (row,) = _status.with_certificates(plain, {"10.0.0.1:17070": expiry(-1)})
    assert row.note.startswith("unreachable (refused); the API certificate EXPIRED")


def test_the_cert_column_shows_the_sooner_certificate_and_flags_due_and_expired_ones():
    table = _status.status_table(rows({"10.0.0.1:37017": expiry(400.9), "10.0.0.1:17070": expiry(824),
                                       "10.0.0.2:37017": expiry(300), "10.0.0.2:17070": expiry(29.5),
                                       "10.0.0.3:17070": expiry(-0.1)}))
    header = table[0].split()
    assert header == ["MACHINE", "ADDRESS", "WANTS-VOTE", "HAS-VOTE", "STATE", "PRIMARY", "API", "CERT", "NOTE"]
    cert = table[0].index("CERT")
    assert [line[cert:cert + _status.CERT_WIDTH].strip() for line in table[1:]] == ["400d", "29d!", "EXPIRED"]
    # The notes start under NOTE (sm1's is empty, so its line ends early).
    note = table[0].index("NOTE")
    assert len(table[1]) < note
    assert table[2][note:].startswith("the API certificate expires in 29 days")
    assert table[3][note:].startswith("the API certificate EXPIRED on 2026-11-30")


def test_a_row_without_certificates_in_a_tls_table_shows_a_dash():
    table = _status.status_table(rows({"10.0.0.1:37017": expiry(100)}))
    cert = table[0].index("CERT")
    assert [line[cert:cert + _status.CERT_WIDTH].strip() for line in table[1:]] == ["100d", "-", "-"]


def test_a_member_of_no_machine_has_no_api_address_so_only_its_mongod_certificate():
    config = {"members": [{"_id": 7, "host": "10.0.0.7:37017"}]}
    status = {"members": [{"name": "10.0.0.7:37017", "state": 2, "health": 1}]}
    (row,) = _status.with_certificates(_status.status_rows([], config, status), {"10.0.0.7:37017": expiry(50)})
    assert row.api_address is None and row.mongo_certificate.days_left == pytest.approx(50)
