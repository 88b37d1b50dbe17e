"""The deployment secrets' decision table, the value rules mongod and the roles apply, and the file store."""

from __future__ import annotations

import os
import re
import stat

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._secrets import (
    ADMIN_PASSWORD,
    API_TOKEN,
    FILE,
    GENERATED,
    GIVEN,
    KEYFILE,
    MISSING,
    SPECS,
    WOULD_GENERATE,
    SecretsDir,
    SecretsDirError,
    missing_message,
    new_value,
    plan_secrets,
    value_problem,
)
from hypothesis import given
from hypothesis import strategies as st

ALL = {"keyfile", "admin_password", "api_token", "api_mongo_password"}

# (given, stored, deployed, check_mode) -> sources; the missing list is every MISSING source.
TABLE = [
    # Variables win, whatever the directory holds and whether the set exists; nothing is made.
    (ALL, set(), True, False, dict.fromkeys(ALL, GIVEN)),
    (ALL, ALL, False, False, dict.fromkeys(ALL, GIVEN)),
    # The secrets directory is reused as it is.
    (set(), ALL, True, False, dict.fromkeys(ALL, FILE)),
    ({"admin_password"}, {"keyfile", "api_token", "api_mongo_password"}, True, True,
     {"keyfile": FILE, "admin_password": GIVEN, "api_token": FILE, "api_mongo_password": FILE}),
    # An existing set with a secret in neither place: missing, never new (the AWX job with a fresh directory).
    (set(), set(), True, False, dict.fromkeys(ALL, MISSING)),
    ({"admin_password"}, {"api_token"}, True, False,
     {"keyfile": MISSING, "admin_password": GIVEN, "api_token": FILE, "api_mongo_password": MISSING}),
    (set(), set(), True, True, dict.fromkeys(ALL, MISSING)),
    # A first deployment makes what it lacks, and under --check only says it would.
    (set(), set(), False, False, dict.fromkeys(ALL, GENERATED)),
    ({"keyfile"}, {"api_token"}, False, False,
     {"keyfile": GIVEN, "admin_password": GENERATED, "api_token": FILE, "api_mongo_password": GENERATED}),
    (set(), set(), False, True, dict.fromkeys(ALL, WOULD_GENERATE)),
]


@pytest.mark.parametrize(("given_names", "stored", "deployed", "check_mode", "sources"), TABLE)
def test_where_each_secret_comes_from(given_names, stored, deployed, check_mode, sources):
    plan = plan_secrets(given_names, stored, deployed, check_mode)
    assert plan.sources == sources
    assert sorted(plan.missing) == sorted(name for name, source in sources.items() if source == MISSING)
    assert sorted(plan.to_generate) == sorted(name for name, source in sources.items()
                                              if source in (GENERATED, WOULD_GENERATE))


def test_an_existing_set_without_an_api_user_gets_its_api_password_as_a_new_secret():
    # The module found no stateserver-api user on the set (a deployment made before it had one): nothing to lose.
    stored = {"keyfile", "admin_password", "api_token"}
    plan = plan_secrets(set(), stored, True, False, unused=frozenset({"api_mongo_password"}))
    assert plan.sources["api_mongo_password"] == GENERATED and plan.missing == []
    assert plan_secrets(set(), stored, True, True, unused=frozenset({"api_mongo_password"})).to_generate == [
        "api_mongo_password"]
    # unused never overrides a value the run has, nor makes the set's own secrets.
    assert plan_secrets({"api_mongo_password"}, stored, True, False,
                        unused=frozenset({"api_mongo_password"})).sources["api_mongo_password"] == GIVEN
    assert plan_secrets(set(), set(), True, False, unused=frozenset({"api_mongo_password"})).missing == [
        "keyfile", "admin_password", "api_token"]


def test_only_the_secrets_asked_for_are_decided():
    plan = plan_secrets(set(), set(), True, False, wanted=(API_TOKEN,))
    assert plan.sources == {"api_token": MISSING} and plan.missing == ["api_token"]


names = st.sets(st.sampled_from(sorted(ALL)))


@given(names, names, st.booleans(), st.booleans())
def test_an_existing_set_never_gets_a_new_secret(given_names, stored, deployed, check_mode):
    plan = plan_secrets(given_names, stored, deployed, check_mode)
    if deployed:
        assert plan.to_generate == []
    # Nothing given or stored is ever replaced, and a run is blocked exactly when something is missing.
    assert not set(plan.to_generate) & (given_names | stored)
    assert bool(plan.missing) == (deployed and not ALL <= given_names | stored)


def test_the_missing_message_names_each_variable_file_and_place():
    msg = missing_message(["keyfile", "admin_password"], "/runner/inventory/stateserver-secrets",
                          ["127.0.0.1:37017"], "stateserver")
    for needed in ("mongod_keyfile_content", "mongod_admin_password", "keyfile", "admin-password",
                   "/runner/inventory/stateserver-secrets", "stateserver_secrets_dir", "AWX", "127.0.0.1:37017"):
        assert needed in msg
    assert "api_token" not in msg and "state_machine_api_token" not in msg


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_generated_values_follow_the_rules(spec):
    values = {new_value(spec) for _attempt in range(5)}
    assert len(values) == 5
    for value in values:
        assert len(value) == spec.length and value_problem(spec, value, "x") is None
        assert re.fullmatch("[A-Za-z0-9]+", value)


@pytest.mark.parametrize(("spec", "value", "usable"), [
    (KEYFILE, "abcDEF", True),
    (KEYFILE, "  abc+/=123\n", True),          # mongod ignores the whitespace around it
    (KEYFILE, "abcde", False),                 # fewer than 6 characters
    (KEYFILE, "a" * 1025, False),              # more than mongod reads
    (KEYFILE, "abc-def_ghi", False),           # not base64
    (ADMIN_PASSWORD, "8 chars!", True),
    (ADMIN_PASSWORD, "short", False),
    (API_TOKEN, "x" * 16, True),
    (API_TOKEN, "x" * 15, False),
    (API_TOKEN, "x" * 15 + " y", False),        # the API server refuses spaces
])
def test_value_rules(spec, value, usable):
    problem = value_problem(spec, value, "the variable v")
    assert (problem is None) == usable
    if problem:
        assert spec.name in problem and "the variable v" in problem and value.strip() not in problem


def test_the_store_writes_0600_files_in_a_0700_directory_and_never_overwrites(tmp_path):
    store = SecretsDir(str(tmp_path / "deep" / "secrets"))
    assert store.stored() == set()
    path = store.write(KEYFILE, "abcdefgh")
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert store.stored() == {"keyfile"} and store.read(KEYFILE) == "abcdefgh"
    with pytest.raises(SecretsDirError, match="appeared"):
        store.write(KEYFILE, "other-value")
    assert store.read(KEYFILE) == "abcdefgh"


def test_the_store_reads_what_the_old_password_lookup_wrote_and_refuses_a_bad_file(tmp_path):
    (tmp_path / "admin-password").write_text("Zq3lookupValue1234567890abcdefgh\n")
    (tmp_path / "keyfile").write_text("not base64!\n")
    store = SecretsDir(str(tmp_path))
    assert store.read(ADMIN_PASSWORD) == "Zq3lookupValue1234567890abcdefgh"
    with pytest.raises(SecretsDirError, match="keyfile") as error:
        store.read(KEYFILE)
    assert "not base64" not in str(error.value)
