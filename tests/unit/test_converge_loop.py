"""The convergence loop (_converge.py) and the pymongo adapter's pure helpers, without a server.

The loop is driven with a fake replica set and a scripted planner, so these tests pin down the loop's own rules:
readiness between steps, one step per iteration, re-read (never re-send) after an interrupted reconfig, no waiting
in check mode, a timeout that carries the partial result, waits from a few round trips up to a quarter heartbeat,
which holds for two heartbeats, then doubling and capped, and lagging members judged on what they say about
themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _converge, _replset
from ansible_collections.stateserver.ha.plugins.module_utils._model import MachineRecord, ReplSetView

TAG = "stateserver-machine"


def member(i: int, votes: int = 1) -> dict:
    return {"_id": i, "host": f"h{i}:37017", "votes": votes, "priority": 1.0 if votes else 0.0,
            "tags": {TAG: f"m{i}"}}


def config(version: int, members: list[dict]) -> dict:
    return {"_id": "stateserver", "version": version, "term": 1, "members": members}


def status(cfg: dict, states: dict | None = None, health: dict | None = None, version: dict | None = None) -> dict:
    states, health, version = states or {}, health or {}, version or {}
    return {"set": "stateserver", "members": [
        {"_id": m["_id"], "name": m["host"], "state": states.get(m["_id"], 1 if m["_id"] == 0 else 2),
         "stateStr": "X", "health": health.get(m["_id"], 1),
         "configVersion": version.get(m["_id"], cfg["version"]), "configTerm": 1}
        for m in cfg["members"]]}


@dataclass
class Step:
    action: str
    machine: str
    member_id: int
    config: dict | None


class FakeSet:
    """Holds a config; reconfig installs it unless told to fail; status follows the config.

    `failures` are raised by the next reconfigs, in order: the adapter's typed errors (_replset.ReplSetError) as
    they are; any other exception stands for an interrupted command, which the adapter answers by re-reading
    (installed or not, per `install_on_failure`). `on_failure` runs before each scripted failure (another actor).
    """

    set_name = "stateserver"

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.sent: list[dict] = []
        self.failures: list[Exception] = []
        self.on_failure = None
        self.install_on_failure = False
        self.status_override = None
        self.stepped_down = 0
        self.primary = 0
        self.records: list = []
        self.read_via: list = []
        self.stepped_down_hosts: list = []

    @property
    def fail_next(self):
        return self.failures[0] if self.failures else None

    @fail_next.setter
    def fail_next(self, exc: Exception) -> None:
        self.failures = [exc]

    def read_view(self, via: str | None = None) -> ReplSetView:
        self.read_via.append(via)
        st = self.status_override(self.cfg) if self.status_override else status(self.cfg, states={
            m["_id"]: 1 if m["_id"] == self.primary else 2 for m in self.cfg["members"]})
        return ReplSetView(config=self.cfg, status=st, now=None)

    def read_records(self) -> list:
        return list(self.records)

    def config_version(self) -> int:
        return self.cfg["version"]

    def reconfig(self, cfg: dict, max_time: float = 60.0) -> bool:
        self.sent.append(cfg)
        if self.failures:
            exc = self.failures.pop(0)
            if self.on_failure is not None:
                self.on_failure(self)
            if isinstance(exc, _replset.ReplSetError):
                raise exc
            if self.install_on_failure:
                self.cfg = cfg
            # The adapter's contract: an interrupted reconfig is verified by re-reading, never re-sent.
            return _replset.same_members(self.cfg, cfg) and self.cfg["version"] >= cfg["version"]
        self.cfg = cfg
        return True

    def step_down(self, host: str) -> None:
        self.stepped_down += 1
        self.stepped_down_hosts.append(host)

    def hellos(self, addresses: list) -> dict:
        return {a: f"nothing answers at {a}" for a in addresses}  # new members' mongods not started yet

    def new_primary(self, old: str, hosts: list, election=None) -> str | None:
        host = next(m["host"] for m in self.cfg["members"] if m["_id"] == self.primary)
        return None if host == old else host


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted_planner(monkeypatch, target: list[dict]) -> None:
    """plan_steps: add missing members non-voting, then promote one at a time; converged when equal to target."""
    def plan(view, machines, assume_ready=True):
        cur = {m["_id"]: m for m in view.config["members"]}
        steps, cfg = [], view.config
        for want in target:
            have = cur.get(want["_id"])
            if have is None:
                new = [*cfg["members"], dict(want, votes=0, priority=0.0)]
                cfg = config(cfg["version"] + 1, new)
                steps.append(Step("add", want["tags"][TAG], want["_id"], cfg))
                if not assume_ready:
                    return steps
        for want in target:
            have = {m["_id"]: m for m in cfg["members"]}[want["_id"]]
            if have["votes"] != want["votes"]:
                new = [dict(m, votes=want["votes"], priority=want["priority"]) if m["_id"] == want["_id"] else m
                       for m in cfg["members"]]
                cfg = config(cfg["version"] + 1, new)
                steps.append(Step("promote", want["tags"][TAG], want["_id"], cfg))
        return steps[:1] if not assume_ready else steps

    def report(view, machines):
        done = _replset.same_members(view.config, config(0, target))
        return done, ([] if done else ["not there yet"])

    monkeypatch.setattr(_converge, "plan_steps", plan)
    monkeypatch.setattr(_converge, "convergence_report", report)
    monkeypatch.setattr(_converge, "validate_reconfig", lambda old, new, force=False: [])


def test_applies_one_step_at_a_time_until_converged(monkeypatch):
    target = [member(0), member(1), member(2)]
    scripted_planner(monkeypatch, target)
    rs, clock = FakeSet(config(1, [member(0)])), Clock()
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert [s["action"] for s in outcome.steps] == ["add", "add", "promote", "promote"]
    assert [s["config_version"] for s in outcome.steps] == [2, 3, 4, 5]
    assert [c["version"] for c in rs.sent] == [2, 3, 4, 5]
    assert outcome.as_result()["voters"] == ["m0", "m1", "m2"]


def test_check_mode_plans_everything_and_sends_nothing(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1), member(2)])
    rs = FakeSet(config(1, [member(0)]))
    outcome = _converge.plan_only(rs)
    assert rs.sent == []
    assert len(outcome.steps) == 4 and outcome.steps[-1]["config_version"] == 5
    assert outcome.as_result()["voters"] == ["m0", "m1", "m2"]
    assert rs.cfg["version"] == 1


def test_waits_for_config_to_propagate_before_the_next_step(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    lagging = {"left": 3}

    def lag(cfg):
        if lagging["left"]:
            lagging["left"] -= 1
            return status(cfg, version={1: cfg["version"] - 1})
        return status(cfg)
    rs.status_override = lag
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert clock.sleeps == [0.05, 0.1]  # a few round trips' waits: a reconfig propagates in round trips
    assert len(rs.sent) == 1


def test_interrupted_reconfig_is_verified_not_resent(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    rs.fail_next = ConnectionError("dropped")
    rs.install_on_failure = True
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert len(rs.sent) == 1  # it landed; re-reading showed that, so nothing was sent twice
    assert [s["action"] for s in outcome.steps] == ["promote"]


def test_interrupted_reconfig_that_did_not_land_is_replanned_after_backoff(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    rs.fail_next = ConnectionError("dropped")
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert [c["version"] for c in rs.sent] == [2, 2]
    assert clock.sleeps == [0.05]


def test_timeout_carries_the_partial_result(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0)])), Clock()
    # The new member never becomes healthy, so after the add the loop waits until the deadline.
    rs.status_override = lambda cfg: status(cfg, health={1: 0}, states={1: 8})
    with pytest.raises(_converge.ConvergeTimeout) as err:
        _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    result = err.value.outcome.as_result()
    assert [s["action"] for s in result["steps"]] == ["add"]
    assert result["converged"] is False
    assert any("h1:37017" in r for r in result["not_converged"])
    assert "did not converge within 60" in str(err.value)
    assert clock.now == pytest.approx(60)
    assert max(clock.sleeps) <= _converge.MAX_DELAY


def test_step_down_waits_for_the_new_primary_and_replans_from_its_own_view(monkeypatch):
    rs, clock = FakeSet(config(1, [member(0), member(1), member(2)])), Clock()
    polls = {"left": 2}

    def plan(view, machines, assume_ready=True):
        primary = next(m["_id"] for m in view.status["members"] if m["state"] == 1)
        return [Step("step_down", "m0", 0, None)] if primary == 0 else []

    def step_down(host):
        rs.stepped_down_hosts.append(host)
        rs.primary = -1  # no primary while the election runs
        return "term-1"

    def new_primary(old, hosts, election):
        assert old == "h0:37017" and "h1:37017" in hosts and election == "term-1"
        polls["left"] -= 1
        if polls["left"]:
            return None
        rs.primary = 1
        return "h1:37017"
    rs.step_down, rs.new_primary = step_down, new_primary
    monkeypatch.setattr(_converge, "plan_steps", plan)
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (True, []))
    outcome = _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert rs.stepped_down_hosts == ["h0:37017"] and rs.sent == []
    assert outcome.steps == [{"action": "step_down", "machine": "m0", "member_id": 0, "config_version": 1}]
    assert rs.read_via == [None, None, "h1:37017"]  # the start, the round that stepped down, the new primary's view
    assert clock.sleeps == [0.05]  # one wait while no member said it was primary


def test_a_step_down_is_sent_only_to_the_member_the_step_names(monkeypatch):
    # The view still lists m0 as primary; the adapter finds m0 is not primary any more and sends nothing.
    rs, clock = FakeSet(config(1, [member(0), member(1), member(2)])), Clock()
    steps = iter([[Step("step_down", "m0", 0, None)]])
    monkeypatch.setattr(_converge, "plan_steps", lambda view, machines, assume_ready=True: next(steps, []))
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (True, []))

    def step_down(host):
        rs.stepped_down_hosts.append(host)
        raise _replset.PrimaryChanged(f"{host} is not the primary now; the step-down was not sent")
    rs.step_down = step_down
    outcome = _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert rs.stepped_down_hosts == ["h0:37017"] and outcome.steps == [] and outcome.converged
    assert rs.read_via == [None, None, None]  # re-read after a quarter heartbeat, not from a "new primary"


def test_a_step_mongodb_would_reject_is_not_sent(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    monkeypatch.setattr(_converge, "validate_reconfig", lambda old, new, force=False: ["two voters change"])
    rs, clock = FakeSet(config(1, [member(0)])), Clock()
    with pytest.raises(_converge.PlanError, match="two voters change"):
        _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert rs.sent == []


@pytest.mark.parametrize("st, expect_up, ready", [
    (status(config(3, [member(0), member(1)])), {"h0:37017", "h1:37017"}, True),
    (status(config(3, [member(0), member(1)]), states={0: 2}), set(), False),                 # no primary
    (status(config(3, [member(0), member(1)]), states={1: 1}), set(), False),                 # two primaries
    (status(config(3, [member(0), member(1)]), health={1: 0}), {"h1:37017"}, False),          # expected up, is down
    (status(config(3, [member(0), member(1)]), health={1: 0}), set(), True),                  # was down already
    (status(config(3, [member(0), member(1)]), version={1: 2}), set(), False),                # config not propagated
    (None, set(), False),
])
def test_readiness_predicate(st, expect_up, ready):
    assert (_converge.not_ready(st, expect_up) == []) is ready


def test_backoff_doubles_from_two_seconds_and_is_capped():
    b = _converge.Backoff()
    assert [b.next() for i in range(6)] == [2.0, 4.0, 8.0, 16.0, 16.0, 16.0]
    b.reset()
    assert b.next() == 2.0


def test_backoff_holds_its_first_delay_steady_times_then_doubles():
    b = _converge.Backoff(0.5, 4.0, steady=3)
    assert [b.next() for i in range(7)] == [0.5, 0.5, 0.5, 1.0, 2.0, 4.0, 4.0]
    b.reset()
    assert [b.next() for i in range(4)] == [0.5, 0.5, 0.5, 1.0]
    assert _converge.Backoff.for_heartbeat(2.0).steady == 8  # two heartbeats of quarter-heartbeat waits


def test_backoff_ramps_from_a_few_round_trips_to_a_quarter_heartbeat_then_holds():
    b = _converge.Backoff.for_heartbeat(2.0)
    # A reconfig shows everywhere within round trips; a member's new state at the primary's next heartbeat.
    assert [b.next() for i in range(14)] == pytest.approx([0.05, 0.1, 0.2, 0.4] + [0.5] * 8 + [1.0, 2.0])
    b.reset()
    assert b.next() == 0.05
    assert [_converge.Backoff.for_heartbeat(0.2).next() for i in range(2)] == [0.05, 0.05]  # already a quarter


@pytest.mark.parametrize("seeds, expected", [
    (["a"], ["a:37017"]),
    (["a:1"], ["a:1"]),
    (["::1"], ["[::1]:37017"]),
    (["[::1]"], ["[::1]:37017"]),
    (["[::1]:5"], ["[::1]:5"]),
    ([" b ", "c"], ["b:37017", "c:37017"]),
])
def test_seed_list_applies_the_default_port(seeds, expected):
    assert _replset.seed_list(seeds, 37017) == expected


def test_client_options_use_pymongo_names():
    opts = _replset.client_options({"login_user": "u", "login_password": "p", "login_database": "admin", "tls": True,
                                    "tls_ca_file": "/ca", "tls_certificate_key_file": "/k",
                                    "tls_certificate_key_file_password": "kp", "tls_allow_invalid_certificates": True,
                                    "server_selection_timeout": 2.5})
    assert opts["username"] == "u" and opts["password"] == "p" and opts["authSource"] == "admin"
    assert opts["tls"] is True and opts["tlsCAFile"] == "/ca" and opts["tlsCertificateKeyFile"] == "/k"
    assert opts["tlsCertificateKeyFilePassword"] == "kp" and opts["tlsAllowInvalidCertificates"] is True
    assert opts["serverSelectionTimeoutMS"] == 2500
    plain = _replset.client_options({"server_selection_timeout": 1})
    assert "username" not in plain and "tls" not in plain


def test_read_settled_waits_out_an_election_but_not_a_lost_majority():
    rs, clock = FakeSet(config(3, [member(0), member(1), member(2)])), Clock()
    elections = {"left": 2}

    def electing(cfg):
        if elections["left"]:
            elections["left"] -= 1
            return status(cfg, states={0: 2})
        return status(cfg)
    rs.status_override = electing
    view = _converge.read_settled(rs, 30, clock=clock, sleep=clock.sleep)
    assert _converge.primary_host(view.status) == "h0:37017"
    assert clock.sleeps == [0.05, 0.1]

    rs2, clock2 = FakeSet(config(3, [member(0), member(1), member(2)])), Clock()
    rs2.status_override = lambda cfg: status(cfg, states={0: 2}, health={1: 0, 2: 0})
    view = _converge.read_settled(rs2, 10, clock=clock2, sleep=clock2.sleep)
    assert _converge.primary_host(view.status) is None
    assert clock2.now == pytest.approx(10)


# -- what mongod answers, and what the loop does with it ----------------------------------------------------------

def code(exc_class, number: int, text: str = "refused"):
    return exc_class(f"replSetReconfig was refused: {text}", number)


@pytest.mark.parametrize("number", [74, 109, 117, 308])
def test_a_refusal_that_clears_is_re_read_and_re_planned_after_backoff(monkeypatch, number):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    rs.failures = [code(_replset.TransientError, number)] * 2
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert [c["version"] for c in rs.sent] == [2, 2, 2]
    assert clock.sleeps == [0.05, 0.1]
    assert [s["action"] for s in outcome.steps] == ["promote"]


def test_a_refusal_that_never_clears_ends_at_the_deadline_with_the_servers_words(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    rs.failures = [code(_replset.TransientError, 308, "CurrentConfigNotCommittedYet: not on a majority")] * 1000
    with pytest.raises(_converge.ConvergeTimeout, match="not on a majority"):
        _converge.converge(rs, 30, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(30)
    assert rs.cfg["version"] == 1


def test_node_not_electable_re_reads_and_steps_the_new_primary_down_first(monkeypatch):
    # The plan demotes m1; between our read and the send m1 became primary, so mongod answers 104.
    rs, clock = FakeSet(config(1, [member(0), member(1), member(2), member(3, votes=0)])), Clock()
    target_votes = {0: 1, 1: 0, 2: 1, 3: 0}

    def plan(view, machines, assume_ready=True):
        cur = {m["_id"]: m for m in view.config["members"]}
        if all(cur[i]["votes"] == v for i, v in target_votes.items()):
            return []
        primary = next(m["_id"] for m in view.status["members"] if m["state"] == 1)
        if primary == 1:
            return [Step("step_down", "m1", 1, None)]
        new = [dict(m, votes=0, priority=0.0) if m["_id"] == 1 else m for m in view.config["members"]]
        return [Step("demote", "m1", 1, config(view.config["version"] + 1, new))]

    def elect_m1(fake):
        fake.primary = 1

    def step_down(host):
        assert host == "h1:37017"
        rs.stepped_down += 1
        rs.primary = 0
    monkeypatch.setattr(_converge, "plan_steps", plan)
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (plan(v, m) == [], []))
    monkeypatch.setattr(_converge, "validate_reconfig", lambda old, new, force=False: [])
    rs.failures = [code(_replset.PrimaryChanged, 104, "m1 would not be electable")]
    rs.on_failure = elect_m1
    rs.step_down = step_down
    outcome = _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert [s["action"] for s in outcome.steps] == ["step_down", "demote"]
    assert rs.stepped_down == 1
    assert [c["version"] for c in rs.sent] == [2, 2]
    assert clock.sleeps == [0.05]  # a short wait, then re-read


def test_incompatible_config_with_the_version_unchanged_fails_at_once_with_the_servers_words(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    words = "replica set IDs do not match, ours: 1; remote node's: 2"
    rs.failures = [_replset.ConfigIncompatible(f"refused: {words}", 2, words)]
    with pytest.raises(_converge.PlanError) as err:
        _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert words in str(err.value) and "promote" in str(err.value)
    assert clock.sleeps == [] and len(rs.sent) == 1  # never retried towards the timeout
    assert err.value.outcome.steps == []


def test_incompatible_config_after_someone_else_reconfigured_is_re_planned(monkeypatch):
    # Another run installed the same promotion (version 2) just before ours arrived with version 2 as well.
    scripted_planner(monkeypatch, [member(0), member(1), member(2)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0), member(2, votes=0)])), Clock()

    def other_run(fake):
        fake.cfg = config(2, [member(0), member(1), member(2, votes=0)])
    rs.failures = [_replset.ConfigIncompatible("refused", 2, "version 2 is not greater than 2")]
    rs.on_failure = other_run
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert [c["version"] for c in rs.sent] == [2, 3]
    assert [s["action"] for s in outcome.steps] == ["promote"]  # only what this run installed
    assert _converge.voter_names(rs.cfg) == ["m0", "m1", "m2"]


def test_an_interrupted_reconfig_that_landed_late_is_counted_once_and_not_resent(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    target = config(2, [member(0), member(1)])

    # The adapter's re-read still saw the old config; the new one is installed by the time the loop reads again.
    rs.failures = [ConnectionError("primary stepped down: 10107")]
    real_read = rs.read_view
    reads = {"n": 0}

    def read_view(via=None):
        reads["n"] += 1
        if reads["n"] == 3:  # the start, the round that sends, then this one
            rs.cfg = target
        return real_read()
    rs.read_view = read_view
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged
    assert len(rs.sent) == 1
    assert outcome.steps == [{"action": "promote", "machine": "m1", "member_id": 1, "config_version": 2}]


def test_waits_start_at_a_quarter_of_the_sets_heartbeat_interval(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    cfg = dict(config(1, [member(0), member(1, votes=0)]), settings={"heartbeatIntervalMillis": 200})
    rs, clock = FakeSet(cfg), Clock()
    lagging = {"left": 14}  # the first read is the start's

    def lag(c):
        if lagging["left"]:
            lagging["left"] -= 1
            return status(c, version={1: c["version"] - 1})
        return status(c)
    rs.status_override = lag
    _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    # A quarter heartbeat for two heartbeats, then doubling, capped at two heartbeats.
    assert clock.sleeps == pytest.approx([0.05] * 8 + [0.1, 0.2, 0.4, 0.4, 0.4])


@pytest.mark.parametrize("cfg, st, seconds", [
    ({"settings": {"heartbeatIntervalMillis": 200}}, None, 0.2),
    ({}, {"heartbeatIntervalMillis": 500}, 0.5),
    ({}, None, 2.0),
    ({"settings": {"heartbeatIntervalMillis": "x"}}, None, 2.0),
    ({"settings": {"heartbeatIntervalMillis": -5}}, None, 2.0),
])
def test_heartbeat_interval(cfg, st, seconds):
    assert _converge.heartbeat_interval(cfg, st) == seconds


def test_given_records_must_be_the_stored_ones_before_anything_is_sent(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0), member(1, votes=0)])), Clock()
    rs.records = [MachineRecord("m0", "h0:37017", "h0:17070"), MachineRecord("m1", "h1:37017", "h1:17070")]
    given = [MachineRecord("m0", "h0:37017", "h0:17070"), MachineRecord("m1", "h1:37017", "h1:17070", False)]
    with pytest.raises(_converge.RecordsMismatch, match="for m1"):
        _converge.converge(rs, 60, clock=clock, sleep=clock.sleep, records=given)
    assert rs.sent == []
    outcome = _converge.converge(rs, 60, clock=clock, sleep=clock.sleep, records=list(rs.records))
    assert outcome.converged and len(rs.sent) == 1


def test_check_mode_plans_from_the_given_records_not_the_stored_ones(monkeypatch):
    seen = []

    def plan(view, machines, assume_ready=True):
        seen.append(machines)
        return []
    monkeypatch.setattr(_converge, "plan_steps", plan)
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (True, []))
    rs = FakeSet(config(1, [member(0)]))
    rs.records = [MachineRecord("stored", "h0:37017", "h0:17070")]
    given = [MachineRecord("planned", "h9:37017", "h9:17070")]
    _converge.plan_only(rs, records=given)
    _converge.plan_only(rs)
    assert seen == [given, rs.records]


# -- moving a healthy member (issue 12) --------------------------------------------------------------------------

def moved(cfg: dict, member_id: int, host: str) -> dict:
    return config(cfg["version"] + 1, [dict(m, host=host) if m["_id"] == member_id else m for m in cfg["members"]])


def test_healthy_moves_names_only_members_that_are_up_now():
    cfg = config(3, [member(0), member(1), member(2)])
    new = moved(moved(cfg, 1, "x1:37017"), 2, "x2:37017")
    st = status(cfg, health={2: 0})
    assert _converge.healthy_moves(cfg, new, st) == [("m1", "h1:37017", "x1:37017")]
    assert _converge.healthy_moves(cfg, moved(cfg, 1, "H1:37017"), status(cfg)) == []  # only the case differs
    assert _converge.healthy_moves(cfg, cfg, status(cfg)) == []


@pytest.mark.parametrize("answer, refused, words", [
    ({"setName": "stateserver", "me": "h1:37017"}, False, []),
    ("nothing answers at x1:37017: Connection refused", True, ["Connection refused"]),
    ({"setName": "other", "me": "x1:37017"}, True, ["replica set 'other'"]),
    ({"setName": "stateserver", "me": "x1:37017"}, True, ["x1:37017 of replica set 'stateserver'"]),
    ({"isWritablePrimary": False}, True, ["not a member of any replica set"]),
])
def test_move_refusals_require_the_new_address_to_answer_as_that_member(answer, refused, words):
    problems = _converge.move_refusals([("m1", "h1:37017", "x1:37017")], {"x1:37017": answer}, "stateserver")
    assert bool(problems) is refused
    for word in ["machine m1", "h1:37017", "x1:37017", *words]:
        assert not refused or word in problems[0]


def test_a_step_that_moves_a_healthy_member_to_a_dead_address_is_not_sent(monkeypatch):
    cfg = config(1, [member(0), member(1), member(2)])
    step = Step("update_address", "m1", 1, moved(cfg, 1, "x1:37017"))
    monkeypatch.setattr(_converge, "plan_steps", lambda view, machines, assume_ready=True: [step])
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (False, ["not there"]))
    rs, clock = FakeSet(cfg), Clock()
    asked = []
    rs.hellos = lambda addresses: asked.extend(addresses) or {a: f"nothing answers at {a}" for a in addresses}
    with pytest.raises(_converge.PlanError, match="refusing to move machine m1 .*nothing was changed"):
        _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert rs.sent == [] and asked == ["x1:37017"]
    with pytest.raises(_converge.PlanError, match="refusing to move machine m1"):
        _converge.plan_only(rs)
    # The same member answering at the new address (its hello names the configured host) may be moved.
    rs.hellos = lambda addresses: {a: {"setName": "stateserver", "me": "h1:37017"} for a in addresses}
    monkeypatch.setattr(_converge, "validate_reconfig", lambda old, new, force=False: [])
    calls = iter([[step]])
    monkeypatch.setattr(_converge, "plan_steps", lambda view, machines, assume_ready=True: next(calls, []))
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (True, []))
    outcome = _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert [c["members"][1]["host"] for c in rs.sent] == ["x1:37017"] and outcome.converged


@pytest.mark.parametrize("answer, refused, words", [
    ("nothing answers at h3:37017: Connection refused", False, []),
    ({"isWritablePrimary": False, "isreplicaset": True}, False, []),  # an uninitiated spare
    ({"setName": "stateserver", "hosts": ["h0:37017", "h3:37017"]}, False, []),  # removed once, still knows us
    ({"setName": "other", "hosts": ["h3:37017"]}, True, ["replica set 'other'"]),
    ({"setName": "stateserver", "hosts": ["h3:37017", "x:1"]}, True, ["another replica set also named", "x:1"]),
])
def test_add_refusals_keep_another_sets_members_out(answer, refused, words):
    cfg = config(3, [member(0), member(1), member(2)])
    problems = _converge.add_refusals([("m3", "h3:37017")], {"h3:37017": answer}, "stateserver", cfg)
    assert bool(problems) is refused
    for word in ["refusing to add machine m3 at h3:37017", *words]:
        assert not refused or word in problems[0]


def test_a_step_that_adds_another_sets_member_is_not_sent(monkeypatch):
    cfg = config(1, [member(0)])
    step = Step("add", "m1", 1, config(2, [member(0), member(1, votes=0)]))
    monkeypatch.setattr(_converge, "plan_steps", lambda view, machines, assume_ready=True: [step])
    monkeypatch.setattr(_converge, "convergence_report", lambda v, m: (False, ["not there"]))
    rs, clock = FakeSet(cfg), Clock()
    rs.hellos = lambda addresses: {a: {"setName": "other", "hosts": [a]} for a in addresses}
    with pytest.raises(_converge.PlanError, match="refusing to add machine m1 .*'other'.*nothing was changed"):
        _converge.converge(rs, 60, clock=clock, sleep=clock.sleep)
    assert rs.sent == []


def with_terms(st: dict, terms: dict) -> dict:
    for m in st["members"]:
        m["configTerm"] = terms.get(m["_id"], m["configTerm"])
    return st


@pytest.mark.parametrize("terms, version, ready", [
    ({1: -1}, {}, True),           # kept the forced config (term -1) after the primary wrote it with its term
    ({0: -1}, {}, True),           # the primary still has the forced config's -1
    ({1: -1}, {1: 2}, False),      # term -1 compares versions only: an older version is still behind
    ({1: 0}, {}, False),           # two real terms differ: not propagated
])
def test_readiness_follows_mongods_config_version_and_term_equality(terms, version, ready):
    st = with_terms(status(config(3, [member(0), member(1)]), version=version), terms)
    assert (_converge.not_ready(st, set()) == []) is ready


# -- members the primary lists a heartbeat late, asked directly ---------------------------------------------------

def hello(host: str, version: int, secondary: bool = True, set_name: str = "stateserver") -> dict:
    return {"setName": set_name, "me": host, "secondary": secondary, "setVersion": version}


def test_lagging_hosts_are_the_reachable_members_the_primary_lists_as_joining_or_on_another_config():
    cfg = config(5, [member(0), member(1), member(2, votes=0), member(3, votes=0), member(4, votes=0)])
    st = status(cfg, states={2: 5, 3: 0, 4: 8}, health={4: 0}, version={1: 4})
    assert _converge.lagging_hosts(st) == ["h1:37017", "h2:37017", "h3:37017"]  # h4 is down: nothing to ask
    assert _converge.lagging_hosts(status(cfg)) == []
    assert _converge.lagging_hosts(status(cfg, states={0: 2})) == []  # no primary: no config to compare with


@pytest.mark.parametrize("answer, state, version, term", [
    (hello("h1:37017", 5), 2, 5, -1),                        # synced, on the primary's config: SECONDARY
    (hello("h1:37017", 5, secondary=False), 5, 4, 1),        # still syncing
    (hello("h1:37017", 4), 5, 4, 1),                         # on an older config
    (hello("h9:37017", 5), 5, 4, 1),                         # another member answers at that address
    (hello("h1:37017", 5, set_name="other"), 5, 4, 1),       # a member of another set
    ("nothing answers at h1:37017", 5, 4, 1),
])
def test_own_view_takes_a_members_word_only_for_being_a_secondary_on_the_primarys_config(answer, state, version, term):
    cfg = config(5, [member(0), member(1, votes=0)])
    st = status(cfg, states={1: 5}, version={1: 4})
    planned, shown = _converge.own_view(st, {"h1:37017": answer}, "stateserver")
    entry = planned["members"][1]
    assert (entry["state"], entry["configVersion"], entry["configTerm"]) == (state, version, term)
    assert planned["members"][0] == shown["members"][0] == st["members"][0]
    assert st["members"][1]["state"] == 5  # the status read is not changed
    entry = shown["members"][1]
    assert (entry["state"], entry["configVersion"], entry["configTerm"]) == (5, version, term)


def answers(rs: FakeSet, hosts: list, secondary: bool = True) -> dict:
    """hello of each host: a member of the set on its config, or an uninitiated mongod before it is added."""
    members = {m["host"] for m in rs.cfg["members"]}
    return {h: hello(h, rs.cfg["version"], secondary) if h in members else {"isWritablePrimary": False}
            for h in hosts}


def test_a_new_member_that_says_it_has_synced_is_promoted_without_waiting_for_the_primarys_heartbeat(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0)])), Clock()
    # The primary lists the member it added as STARTUP2 on no config until its next heartbeat, which comes after the
    # promotion here (the fourth read), a config behind; the member itself says at once that it is SECONDARY on the
    # current config.
    reads = {"n": 0}

    def heartbeat_late(cfg):
        reads["n"] += 1
        if reads["n"] < 4:
            return status(cfg, states={1: 5}, version={1: -2})
        return status(cfg, version={1: cfg["version"] - 1})
    rs.status_override = heartbeat_late
    rs.hellos = lambda hosts: answers(rs, hosts)
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged and [s["action"] for s in outcome.steps] == ["add", "promote"]
    assert [c["version"] for c in rs.sent] == [2, 3]
    # Promoted on the member's word at once; the run ended once the primary showed it SECONDARY too, and its config
    # version (1 behind in the primary's view) was taken from the member.
    assert clock.sleeps == []
    assert outcome.status["members"][1]["state"] == 2


def test_a_run_ends_only_when_the_primary_itself_shows_every_member_ready(monkeypatch):
    target = [member(0), member(1, votes=0)]
    scripted_planner(monkeypatch, target)

    def report(view, machines):
        done = _replset.same_members(view.config, config(0, target)) and all(
            m["state"] in (1, 2) for m in view.status["members"])
        return done, ([] if done else ["not there yet"])
    monkeypatch.setattr(_converge, "convergence_report", report)
    rs, clock = FakeSet(config(1, [member(0)])), Clock()
    reads = {"n": 0}

    def heartbeat_late(cfg):
        reads["n"] += 1
        return status(cfg, states={1: 5}) if reads["n"] < 5 else status(cfg)
    rs.status_override = heartbeat_late
    rs.hellos = lambda hosts: answers(rs, hosts)
    outcome = _converge.converge(rs, 300, clock=clock, sleep=clock.sleep)
    assert outcome.converged and [s["action"] for s in outcome.steps] == ["add"]
    assert clock.sleeps == [0.05, 0.1]  # the standby said SECONDARY at once; the primary showed it two reads later


def test_a_new_member_that_says_it_is_still_syncing_is_waited_for(monkeypatch):
    scripted_planner(monkeypatch, [member(0), member(1)])
    rs, clock = FakeSet(config(1, [member(0)])), Clock()
    rs.status_override = lambda cfg: status(cfg, states={1: 5}, version={1: -2})
    rs.hellos = lambda hosts: answers(rs, hosts, secondary=False)
    with pytest.raises(_converge.ConvergeTimeout) as err:
        _converge.converge(rs, 10, clock=clock, sleep=clock.sleep)
    assert [s["action"] for s in err.value.outcome.steps] == ["add"]
    assert len(rs.sent) == 1
