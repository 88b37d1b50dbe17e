"""mongod_member's decisions (module_utils/_member.py) and its observe-decide-act loop against a fake member."""

from __future__ import annotations

import re

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils._member import (
    CREATE_ADMIN,
    INITIATE,
    STEP_DOWN,
    MemberError,
    MemberView,
    WaitTimeout,
    initiate_config,
    is_ready,
    member_view,
    plan_bootstrap,
    plan_step_down,
    readiness_message,
    validate_bootstrap_args,
    wait_until,
)
from ansible_collections.stateserver.ha.plugins.modules import mongod_member

FRESH = MemberView(answering=True)
ONE_MEMBER_PRIMARY = MemberView(answering=True, set_name="stateserver", primary=True, host="10.0.0.1:37017",
                                members=1)
SECONDARY_OF_THREE = MemberView(answering=True, set_name="stateserver", secondary=True, host="10.0.0.2:37017",
                                members=3)
SILENT = MemberView(answering=False)


def kinds(actions):
    return [a.kind for a in actions]


# -- what a hello reply says -----------------------------------------------------------------------------------

def test_member_view_of_an_uninitiated_member():
    view = member_view({"isWritablePrimary": False, "secondary": False, "isreplicaset": True, "ok": 1.0})
    assert view.answering and not view.initiated and not view.primary and view.members == 0


def test_member_view_counts_every_kind_of_member():
    view = member_view({"setName": "stateserver", "isWritablePrimary": True, "me": "10.0.0.1:37017",
                        "hosts": ["10.0.0.1:37017", "10.0.0.2:37017"], "passives": ["10.0.0.3:37017"]})
    assert view.initiated and view.primary and view.host == "10.0.0.1:37017" and view.members == 3


def test_member_view_of_no_reply():
    assert member_view(None) == SILENT
    assert member_view(None).as_dict() == {"answering": False, "initiated": False, "set_name": None,
                                           "primary": False, "secondary": False, "host": None}


# -- bootstrap --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("view, can_log_in, expected", [
    (FRESH, False, [INITIATE, CREATE_ADMIN]),
    (SILENT, False, [INITIATE, CREATE_ADMIN]),  # check mode on a host where mongod is not installed yet
    (ONE_MEMBER_PRIMARY, False, [CREATE_ADMIN]),  # an earlier run initiated the set and stopped
    (ONE_MEMBER_PRIMARY, True, []),
    (SECONDARY_OF_THREE, True, []),  # the set has grown since: a re-run touches nothing
], ids=["fresh", "not-installed-yet", "initiated-no-admin", "done", "grown"])
def test_bootstrap_plans_only_what_is_missing(view, can_log_in, expected):
    actions = plan_bootstrap(view, can_log_in, "stateserver", "10.0.0.1:37017", "sm1", "admin")
    assert kinds(actions) == expected


def test_bootstrap_actions_say_what_they_do():
    actions = plan_bootstrap(FRESH, False, "stateserver", "10.0.0.1:37017", "sm1", "admin")
    assert [a.text for a in actions] == [
        "initiate replica set stateserver with this member 10.0.0.1:37017 (machine sm1)",
        "create the admin user admin through the localhost exception"]


def test_bootstrap_refuses_a_member_of_another_set():
    view = MemberView(answering=True, set_name="other", primary=True, members=1)
    with pytest.raises(MemberError, match="belongs to replica set 'other'"):
        plan_bootstrap(view, True, "stateserver", "10.0.0.1:37017", "sm1", "admin")


def test_bootstrap_with_a_wrong_password_on_a_grown_set_fails_instead_of_waiting():
    with pytest.raises(MemberError, match="already has 3 members.*not the deployed one"):
        plan_bootstrap(SECONDARY_OF_THREE, False, "stateserver", "10.0.0.2:37017", "sm2", "admin")


def test_initiate_config_is_one_tagged_member():
    assert initiate_config("stateserver", "10.0.0.1:37017", "sm1", "stateserver-machine") == {
        "_id": "stateserver", "members": [{"_id": 0, "host": "10.0.0.1:37017", "tags": {"stateserver-machine": "sm1"}}]}


@pytest.mark.parametrize("host", ["10.0.0.1:37017", "sm1.example:1", "[2001:db8::1]:37017", "[::1]:37017"])
def test_member_host_accepts_host_and_port(host):
    validate_bootstrap_args(host, "sm1")


@pytest.mark.parametrize("host", [None, "", "10.0.0.1", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:70000", "a b:1",
                                  "2001:db8::1:37017"])
def test_member_host_without_a_valid_port_is_refused(host):
    with pytest.raises(MemberError, match="member_host must be HOST:PORT"):
        validate_bootstrap_args(host, "sm1")


@pytest.mark.parametrize("host", ["::1:37017", "2001:db8::1:37017"])
def test_member_host_as_an_unbracketed_ipv6_address_is_refused_with_the_brackets_hint(host):
    left = host.rpartition(":")[0]
    with pytest.raises(MemberError, match=re.escape(f"write [{left}]:37017")):
        validate_bootstrap_args(host, "sm1")


@pytest.mark.parametrize("machine", [None, "", "  "])
def test_empty_machine_is_refused(machine):
    with pytest.raises(MemberError, match="machine must name"):
        validate_bootstrap_args("10.0.0.1:37017", machine)


# -- step-down and readiness ------------------------------------------------------------------------------------

@pytest.mark.parametrize("view, voters, expected", [
    (SECONDARY_OF_THREE, 3, []),
    (ONE_MEMBER_PRIMARY, 1, []),
    (ONE_MEMBER_PRIMARY, 3, [STEP_DOWN]),
    (SILENT, 0, []),
], ids=["secondary", "only-voter", "primary-of-three", "silent"])
def test_step_down_only_a_primary_that_can_hand_over(view, voters, expected):
    actions, why = plan_step_down(view, voters)
    assert kinds(actions) == expected and why


@pytest.mark.parametrize("state, view, ready", [
    ("started", SILENT, False), ("started", FRESH, True),
    ("ready", FRESH, False), ("ready", ONE_MEMBER_PRIMARY, True), ("ready", SECONDARY_OF_THREE, True),
    ("ready", MemberView(answering=True, set_name="stateserver", members=3), False),  # STARTUP2/RECOVERING
    ("stepped_down", ONE_MEMBER_PRIMARY, False), ("stepped_down", SECONDARY_OF_THREE, True),
    ("stepped_down", SILENT, False), ("bootstrapped", FRESH, False), ("bootstrapped", ONE_MEMBER_PRIMARY, True),
])
def test_is_ready(state, view, ready):
    assert is_ready(view, state) is ready


def test_readiness_message():
    assert readiness_message("ready", True) == "the member is PRIMARY or SECONDARY"
    assert readiness_message("started", False) == "the member does not answer yet (check mode does not wait)"


# -- waiting ----------------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_backs_off_from_a_short_first_pause_to_the_cap():
    fake = FakeClock()
    values = iter(range(10))
    assert wait_until(lambda: next(values), lambda v: v == 6, 60, "six", clock=fake.clock, sleep=fake.sleep) == 6
    assert fake.sleeps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_wait_times_out_with_the_last_observation_and_never_oversleeps():
    fake = FakeClock()
    with pytest.raises(WaitTimeout, match=r"after 2s waiting for the member to answer; last seen: 7") as exc:
        wait_until(lambda: 7, lambda v: False, 2, "the member to answer", clock=fake.clock, sleep=fake.sleep)
    assert exc.value.last == 7
    assert fake.now == pytest.approx(102.0)


def test_wait_counts_transient_errors_as_not_yet():
    fake = FakeClock()
    answers = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def probe():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until(probe, lambda v: v == "up", 10, "up", transient=(ConnectionError,), clock=fake.clock,
                      sleep=fake.sleep) == "up"


def test_wait_lets_other_errors_through():
    with pytest.raises(KeyError):
        wait_until(lambda: {}["x"], bool, 10, "x", transient=(ConnectionError,), sleep=lambda s: None)


# -- the module's loop, against a fake member --------------------------------------------------------------------

class FakeMember:
    """A mongod with the localhost exception: initiate makes a one-member primary, create_admin a user."""

    def __init__(self, initiated=False, admin=False, voters=1, primary=None, answering=True):
        self.initiated, self.admin, self.voter_count, self.answering = initiated, admin, voters, answering
        self.primary = initiated if primary is None else primary
        self.sent = []

    def view(self):
        if not self.answering:
            return MemberView(answering=False)
        return MemberView(answering=True, set_name="stateserver" if self.initiated else None, primary=self.primary,
                          secondary=self.initiated and not self.primary, host="10.0.0.1:37017",
                          members=self.voter_count if self.initiated else 0)

    def admin_can_log_in(self):
        return self.admin

    def voters(self):
        return self.voter_count

    def initiate(self, config):
        self.sent.append(("initiate", config))
        self.initiated = self.primary = True

    def create_admin(self):
        self.sent.append(("createUser",))
        self.admin = True

    def step_down(self):
        self.sent.append(("stepDown",))
        self.primary = False


class FakeModule:
    def __init__(self, check_mode=False, **params):
        self.check_mode = check_mode
        self.params = {"state": "bootstrapped", "login_host": "127.0.0.1", "port": 37017,
                       "replica_set": "stateserver", "login_user": "admin", "login_password": "secret-pw",
                       "member_host": "10.0.0.1:37017", "machine": "sm1", "timeout": 5.0, **params}
        self.warnings = []

    def warn(self, text):
        self.warnings.append(text)


def run(member, **kwargs):
    """The module's result for these arguments; its warnings are in result["warnings"]."""
    result = {"changed": False, "actions": [], "member": {}, "msg": ""}
    module = FakeModule(**kwargs)
    mongod_member.run(module, member, result)
    return dict(result, warnings=module.warnings)


def test_bootstrap_in_check_mode_reports_both_actions_and_sends_nothing():
    member = FakeMember()
    result = run(member, check_mode=True)
    assert result["changed"] and len(result["actions"]) == 2 and member.sent == []


def test_bootstrap_initiates_creates_the_admin_then_changes_nothing():
    member = FakeMember()
    first = run(member)
    assert first["changed"] and [s[0] for s in member.sent] == ["initiate", "createUser"]
    assert member.sent[0][1]["members"][0]["tags"] == {"stateserver-machine": "sm1"}
    assert first["member"]["primary"] and first["member"]["initiated"]
    second = run(member)
    assert not second["changed"] and second["actions"] == [] and len(member.sent) == 2


def test_bootstrap_check_mode_on_a_silent_member_warns_and_plans_a_new_member():
    result = run(FakeMember(answering=False), check_mode=True)
    assert result["changed"] and len(result["actions"]) == 2 and result["warnings"]


def test_step_down_sends_one_step_down_then_changes_nothing():
    member = FakeMember(initiated=True, admin=True, voters=3)
    first = run(member, state="stepped_down")
    assert first["changed"] and member.sent == [("stepDown",)] and not first["member"]["primary"]
    second = run(member, state="stepped_down")
    assert not second["changed"] and member.sent == [("stepDown",)]


def test_step_down_in_check_mode_reports_without_sending():
    member = FakeMember(initiated=True, admin=True, voters=3)
    result = run(member, state="stepped_down", check_mode=True)
    assert result["changed"] and member.sent == [] and member.primary


def test_ready_in_check_mode_reads_the_member_without_waiting():
    result = run(FakeMember(answering=False), state="ready", check_mode=True)
    assert not result["changed"] and result["member"]["answering"] is False
    assert result["msg"] == "the member is not PRIMARY or SECONDARY yet (check mode does not wait)"
    result = run(FakeMember(initiated=True, admin=True, voters=3), state="ready", check_mode=True)
    assert result["member"]["primary"] and result["msg"] == "the member is PRIMARY or SECONDARY"
