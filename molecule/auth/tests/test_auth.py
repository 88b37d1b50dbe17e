"""auth: unauthenticated access to mongod and the API is refused; no generated secret in a -vvv run's log."""

import hatest
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure


def test_unauthenticated_client_cannot_read_or_reconfigure():
    for h in hatest.hosts():
        with MongoClient(f"{h['ip']}:37017", directConnection=True, serverSelectionTimeoutMS=10000) as c:
            with pytest.raises(OperationFailure) as err:
                c.admin.command("replSetGetConfig")
            assert err.value.code == 13  # Unauthorized
            with pytest.raises(OperationFailure):
                c.stateserver.machines.find_one()


def test_wrong_password_is_refused():
    with pytest.raises(OperationFailure) as err, hatest.client(password="not-the-password",
                                                               serverSelectionTimeoutMS=10000) as c:
        c.admin.command("replSetGetConfig")
    assert err.value.code == 18  # AuthenticationFailed


def test_api_refuses_requests_without_the_token():
    for h in hatest.hosts():
        assert hatest.api(h["name"], "GET", "/v1/ready").status_code == 401
        assert hatest.api(h["name"], "GET", "/v1/ready", "wrong-token-wrong-token").status_code == 401
        assert hatest.api(h["name"], "GET", "/v1/ready", hatest.api_token()).status_code == 200


def test_no_generated_secret_appears_in_a_verbose_run(tmp_path):
    log = tmp_path / "ensure-ha-vvv.log"
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3", "-vvv", log=log)
    assert proc.returncode == 0, proc.stdout[-4000:]
    text = log.read_text()
    assert len(text) > 10000  # a real -vvv log, not an empty one
    assert hatest.admin_password() not in text
    assert hatest.keyfile() not in text
    assert hatest.api_token() not in text
    # Also no long fragment of the keyfile (it could be wrapped or split).
    key = hatest.keyfile()
    assert not any(key[i:i + 40] in text for i in range(0, len(key) - 40, 40))
