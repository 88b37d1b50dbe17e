"""peergroup's promises beyond one clean run, and ha_status_info's rows, through ansible-playbook on simulator sets.

--check lists the steps a real run then sends (growth and repair); given records must be the stored ones; invalid
records change nothing; a member of another set is refused before anything is sent; two runs at once both
converge and no vote is lost on the way.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
import time

import pytest
from ansible_collections.stateserver.ha.plugins.module_utils import _converge
from ansible_collections.stateserver.ha.plugins.module_utils._peergroup import convergence_report
from ansible_collections.stateserver.ha.plugins.module_utils._replset import ReplSet
from cluster import MACHINE_TAG, Cluster
from mongosim import certs
from playbook import run_tasks
from pymongo.errors import PyMongoError
from test_modules import EA as EA_
from test_modules import PG, STATUS, ConnectionCounter, assert_converged, conn, converge_to, ea, pg, voters

pytestmark = pytest.mark.timeout(480)


def failed(result: dict) -> bool:
    return result.get("failed") is True


def test_check_mode_lists_the_steps_a_growth_then_sends(tmp_path, cluster_factory):
    cluster = cluster_factory(size=5)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    version = cluster.read()[0]["version"]
    machines = [{"name": name, "address": host} for name, host in zip(cluster.names, cluster.hosts)]
    # With `status`, peergroup also returns the status rows: as the set is now under --check, converged after.
    tasks = [ea(cluster, 5, 5), pg(cluster, records="{{ r0.records }}", status={"pool": machines})]

    check = run_tasks(tmp_path / "check", tasks, check=True)
    assert not failed(check[0]) and not failed(check[1]), check.results
    assert check[1]["changed"] is True and check[1]["steps"]
    assert cluster.read()[0]["version"] == version
    assert [(r["machine"], r["has_vote"]) for r in check[1]["status"]["rows"]] == [
        ("sm1", True), ("sm2", True), ("sm3", True), ("sm4", None), ("sm5", None)]

    real = run_tasks(tmp_path / "real", [*tasks, {STATUS: {**conn(cluster), "pool": machines}}])
    assert not failed(real[0]) and not failed(real[1]), real.results
    assert real[1]["steps"] == check[1]["steps"]
    assert [s["action"] for s in real[1]["steps"]].count("promote") == 2
    assert_converged(cluster, cluster.names[:5])
    status = real[1]["status"]
    assert status["converged"] is True and sorted(status["voters"]) == cluster.names[:5]
    assert [(r["machine"], r["has_vote"], r["wants_vote"]) for r in status["rows"]] == [
        (name, True, True) for name in cluster.names[:5]]
    # The same rows ha_status_info reads afterwards (the primary may differ only if an election came between).
    after = real[2]
    assert not failed(after) and after["config_version"] == status["config_version"], after
    assert after["rows"] == status["rows"] or after["primary"] != status["primary"], (after, status)


def test_check_mode_lists_the_steps_a_repair_then_sends(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    primary = cluster.primary_name()
    victim = next(name for name in cluster.names[:3] if name != primary)
    cluster.kill(cluster.names.index(victim))
    down_after = 2
    cluster.wait_for(lambda: cluster.member_down_for(victim) > down_after + 1, 60, f"{victim} to be seen down")
    version = cluster.read()[0]["version"]
    tasks = [ea(cluster, 3, 4, down_after=down_after), pg(cluster, records="{{ r0.records }}")]

    check = run_tasks(tmp_path / "check", tasks, check=True)
    assert not failed(check[0]) and not failed(check[1]), check.results
    assert check[0]["demoted"] == [victim] and check[0]["added"] == ["sm4"]
    assert cluster.read()[0]["version"] == version

    real = run_tasks(tmp_path / "real", tasks)
    assert not failed(real[0]) and not failed(real[1]), real.results
    assert real[1]["steps"] == check[1]["steps"]
    config = cluster.read()[0]
    assert voters(config) == ({*cluster.names[:3], "sm4"} - {victim})


def test_records_that_are_not_the_stored_ones_or_not_valid_change_nothing(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    config, _status, stored = cluster.read()
    records = [{"name": d["_id"], "mongo_address": d["mongo_address"], "api_address": d["api_address"],
                "wants_vote": d["wants_vote"]} for d in stored]
    other = [dict(r, wants_vote=False) if r["name"] == "sm2" else r for r in records]
    bad = [dict(r, mongo_address="h:99999") if r["name"] == "sm3" else r for r in records]
    run = run_tasks(tmp_path / "given", [pg(cluster, records=other), pg(cluster, records=bad),
                                         pg(cluster, records=records)])
    assert failed(run[0]) and run[0]["changed"] is False and "sm2" in run[0]["msg"], run[0]
    assert failed(run[1]) and run[1]["changed"] is False and "h:99999" in run[1]["msg"], run[1]
    assert not failed(run[2]) and run[2]["changed"] is False, run[2]

    # A stored record that fails validation: peergroup refuses, names the record, changes nothing.
    with cluster.client() as c:
        c.stateserver.machines.update_one({"_id": "sm2"}, {"$set": {"wants_vote": "no"}})
    run = run_tasks(tmp_path / "stored", [pg(cluster), {STATUS: conn(cluster)}])
    assert failed(run[0]) and run[0]["changed"] is False, run[0]
    assert "'sm2'" in run[0]["msg"] and "wants_vote" in run[0]["msg"], run[0]["msg"]
    assert not failed(run[1]) and run[1]["converged"] is False, run[1]
    assert any("sm2" in p for p in run[1]["record_problems"]), run[1]
    after = cluster.read()[0]
    assert after["version"] == config["version"] and after["members"] == config["members"]


def test_a_member_of_another_set_is_refused_before_anything_is_sent(tmp_path, cluster_factory):
    cluster = cluster_factory(size=3)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    # A one-member set of the same name elsewhere: its own replicaSetId. Its record is written behind
    # ensure_availability's back (which checks set identity first); peergroup checks it too, before mongod would.
    foreign = cluster_factory(size=1)
    foreign.initiate(0)
    with cluster.client() as c:
        c.stateserver.machines.insert_one({"_id": "intruder", "mongo_address": foreign.addresses[0],
                                           "api_address": f"{foreign.hosts[0]}:17070", "wants_vote": False})
    before = cluster.read()[0]
    start = time.monotonic()
    run = run_tasks(tmp_path / "refused", [pg(cluster, timeout=120)])
    took = time.monotonic() - start
    assert failed(run[0]) and run[0]["changed"] is False, run[0]
    assert "refusing to add machine intruder" in run[0]["msg"], run[0]["msg"]
    assert "another replica set also named 'stateserver'" in run[0]["msg"], run[0]["msg"]
    assert took < 60, f"a refusal that will not clear must not be retried to the timeout ({took:.0f}s)"
    after = cluster.read()[0]
    assert after["version"] == before["version"] and after["members"] == before["members"]
    assert [m["host"] for m in foreign.direct_config(0)["members"]] == foreign.addresses

    # The second line of defence: the host did not answer when peergroup looked (it started just after), so the add
    # is sent and mongod refuses it (103, the version unchanged): the run fails at once with mongod's words.
    with ReplSet(conn(cluster)) as rs:
        real = rs.hellos
        rs.hellos = lambda addresses: {a: f"nothing answers at {a}" if a == foreign.addresses[0] else answer
                                       for a, answer in real(addresses).items()}
        start = time.monotonic()
        with pytest.raises(_converge.PlanError, match="refused the add step for machine intruder") as err:
            _converge.converge(rs, 120)
        took = time.monotonic() - start
    assert err.value.outcome.steps == [] and took < 60, (took, str(err.value))
    after = cluster.read()[0]
    assert after["version"] == before["version"] and after["members"] == before["members"]


class VoterWatch:
    """Polls the config while runs happen and keeps every distinct (version, voters) it sees."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: list[tuple[int, frozenset]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.cluster.client() as c:
            while not self._stop.is_set():
                try:
                    config = c.admin.command("replSetGetConfig")["config"]
                except PyMongoError:
                    time.sleep(0.05)
                    continue
                entry = (config["version"], frozenset(m["tags"][MACHINE_TAG] for m in config["members"]
                                                      if m.get("votes", 1) > 0))
                if not self.seen or self.seen[-1] != entry:
                    self.seen.append(entry)
                time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def test_two_peergroup_runs_at_once_both_converge_and_no_vote_is_lost(tmp_path, cluster_factory):
    cluster = cluster_factory(size=5)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    run = run_tasks(tmp_path / "records", [ea(cluster, 5, 5)])
    assert not failed(run[0]) and run[0]["added"] == ["sm4", "sm5"], run[0]
    results: dict[str, object] = {}

    def one(name: str) -> None:
        results[name] = run_tasks(tmp_path / name, [pg(cluster, timeout=180)])

    with VoterWatch(cluster) as watch:
        threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    for name in ("a", "b"):
        result = results[name][0]
        assert not failed(result) and result["converged"] is True, (name, result)
    assert_converged(cluster, cluster.names[:5])
    # Between any two configs seen, at most one vote changed, and none was taken away.
    for (_v1, before), (_v2, after) in zip(watch.seen, watch.seen[1:]):
        assert before <= after and len(after - before) <= 1, watch.seen
    assert watch.seen[-1][1] == frozenset(cluster.names[:5])


def test_status_rows_and_table_for_pool_members_spares_and_a_dead_member(tmp_path, cluster_factory):
    silent = cluster_factory(size=2, start=0)
    cluster = cluster_factory(size=4)
    pool = [{"name": name, "address": host} for name, host in zip(cluster.names, cluster.hosts)]
    run = run_tasks(tmp_path / "before", [{STATUS: {**conn(cluster), "pool": pool}}, {STATUS: conn(silent)}])
    assert not failed(run[0]) and run[0]["answered"] is True and run[0]["initiated"] is False, run[0]
    assert [r["state"] for r in run[0]["rows"]] == ["no replica set"] * 4
    assert not failed(run[1]) and run[1]["answered"] is False and run[1]["rows"] == [], run[1]

    converge_to(cluster, tmp_path / "setup", 3, 3)
    primary = cluster.primary_name()
    victim = next(name for name in cluster.names[:3] if name != primary)
    cluster.kill(cluster.names.index(victim))
    cluster.wait_for(lambda: cluster.member_down_for(victim) > 0, 30, f"{victim} to be seen down")
    run = run_tasks(tmp_path / "status", [{STATUS: {**conn(cluster, seeds=3), "pool": pool}},
                                          {"stateserver.ha.ha_status": conn(cluster, seeds=3)}])
    status, legacy = run.results
    assert not failed(status), status
    rows = {r["machine"]: r for r in status["rows"]}
    assert [r["machine"] for r in status["rows"]] == cluster.names
    assert rows[primary]["primary"] is True and rows[primary]["state"] == "PRIMARY"
    assert rows[victim]["state"] == "DOWN" and rows[victim]["has_vote"] is True and rows[victim]["note"]
    # No API server runs on these hosts: each is asked, and none answers.
    assert rows["sm4"] == {"machine": "sm4", "address": cluster.addresses[3], "wants_vote": None,
                           "has_vote": None, "state": "spare", "primary": False, "note": "", "api_answers": False}
    assert status["table"][0].split() == ["MACHINE", "ADDRESS", "WANTS-VOTE", "HAS-VOTE", "STATE", "PRIMARY", "API",
                                          "NOTE"]
    assert len(status["table"]) == 5 and status["table"][1].startswith("sm1 ")
    # The old name still works and answers the same.
    assert not failed(legacy) and legacy["voters"] == status["voters"] and legacy["primary"] == status["primary"]


def test_a_voter_added_by_hand_is_not_converged_while_the_server_still_flags_it_newly_added(tmp_path, cluster_factory):
    cluster = cluster_factory(size=4, start=3)
    converge_to(cluster, tmp_path / "setup", 3, 3)
    config = cluster.read()[0]
    joining = cluster.addresses[3]
    # What rs.add() sends: a voter at once. mongod marks it newlyAdded until it has synced; nothing runs there yet.
    config["version"] += 1
    config["members"].append({"_id": 3, "host": joining, "tags": {MACHINE_TAG: "sm4"}})
    with cluster.client() as c:
        c.admin.command("replSetReconfig", config)
        assert all("newlyAdded" not in m for m in c.admin.command("replSetGetConfig")["config"]["members"])

    with ReplSet(conn(cluster)) as rs:
        view = rs.read_view()
        assert next(m for m in view.config["members"] if m["host"] == joining).get("newlyAdded") is True
        converged, reasons = convergence_report(view, rs.read_records())
        assert not converged and f"member 3 ({joining}) is still newlyAdded" in reasons

        cluster.sim.start(3)

        def flag_cleared():
            current = rs.read_view()
            return current if not any(m.get("newlyAdded") for m in current.config["members"]) else None
        view = cluster.wait_for(flag_cleared, 60, "the primary to clear newlyAdded once sm4 has synced")
        assert not any("newlyAdded" in r for r in convergence_report(view, rs.read_records())[1])


class _Live(http.server.BaseHTTPRequestHandler):
    """/v1/live as an API server answers it; `body` set per server (a starting server, another service...)."""

    body = b'{"status": "ok"}'

    def do_GET(self):
        code = 200 if self.path == "/v1/live" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.server.body if code == 200 else b"{}")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def live_server(body: bytes = b'{"status": "ok"}', tls: ssl.SSLContext | None = None):
    """An HTTP(S) server on 127.0.0.1 (a free port) answering /v1/live with `body`; yields its host:port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Live)
    server.body = body
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_status_says_which_machines_api_server_answers_its_liveness_check(tmp_path, cluster_factory):
    silent = cluster_factory(size=1, start=0)  # no replica set needed: pool hosts are probed all the same
    ca = certs.make_ca(tmp_path / "ca")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(ca.issue("api", ["127.0.0.1"]))
    with live_server() as up, live_server(b'{"status": "starting"}') as other, live_server(tls=tls) as secure:
        pool = [{"name": "sm1", "address": "127.20.9.1", "api_address": up},
                {"name": "sm2", "address": "127.20.9.2", "api_address": closed_port()},
                {"name": "sm3", "address": "127.20.9.3", "api_address": other},
                {"name": "sm4", "address": "127.20.9.4", "api_address": secure}]
        status = {**conn(silent), "pool": pool}
        run = run_tasks(tmp_path / "probe", [
            {STATUS: status},
            {STATUS: {**status, "api_scheme": "https", "api_ca_file": ca.path}},
            {STATUS: {**status, "api_scheme": "https"}},
            {STATUS: {**status, "probe_api": False}},
        ])
    plain, https_ca, https_untrusted, unasked = run.results
    assert not any(failed(r) for r in run.results), run.results
    assert [r["api_answers"] for r in plain["rows"]] == [True, False, False, False]
    assert [line.split()[-1] for line in plain["table"][1:]] == ["yes", "no", "no", "no"]
    # Over HTTPS only the server whose certificate the given CA signed answers; without the CA it is not trusted.
    assert [r["api_answers"] for r in https_ca["rows"]] == [False, False, False, True]
    assert [r["api_answers"] for r in https_untrusted["rows"]] == [False] * 4
    assert [r["api_answers"] for r in unasked["rows"]] == [None] * 4
    assert [line.split()[-1] for line in unasked["table"][1:]] == ["-"] * 4


API_ROLES = [{"role": "readWrite", "db": "stateserver"}, {"role": "clusterMonitor", "db": "admin"}]


def test_the_plan_keeps_the_api_user_once_the_set_exists(tmp_path, cluster_factory):
    cluster = cluster_factory(size=3)
    user = {"name": "stateserver-api", "password": "api-user-password", "roles": API_ROLES}
    # Before the set exists the plan is a first deployment and no user is made.
    first = run_tasks(tmp_path / "first", [ea(cluster, 3, 3, api_user=user)])[0]
    assert not failed(first) and first["first_deployment"] and first["api_user"]["actions"] == [], first

    converge_to(cluster, tmp_path / "setup", 3, 3)
    more = {**user, "roles": [*API_ROLES, {"role": "read", "db": "local"}]}
    run = run_tasks(tmp_path / "user", [
        {**ea(cluster, 3, 3, api_user=user), "check_mode": True},
        ea(cluster, 3, 3, api_user=user),
        ea(cluster, 3, 3, api_user=user),
        ea(cluster, 3, 3, api_user=more),
    ])
    check, create, again, roles = run.results
    assert check["api_user"]["actions"] == ["create"] and check["changed"], check
    assert create["api_user"]["actions"] == ["create"] and create["changed"], create
    assert again["api_user"]["actions"] == [] and not again["changed"], again
    assert roles["api_user"]["actions"] == ["set_roles"], roles
    assert "api-user-password" not in run.stdout + run.stderr
    with cluster.client() as c:
        stored = c.admin.command("usersInfo", {"user": "stateserver-api", "db": "admin"})["users"][0]["roles"]
    assert sorted((r["role"], r["db"]) for r in stored) == [("clusterMonitor", "admin"), ("read", "local"),
                                                            ("readWrite", "stateserver")]


def test_peergroup_runs_only_when_a_set_exists(tmp_path, cluster_factory):
    cluster = cluster_factory(size=3)
    run = run_tasks(tmp_path, [{PG: {**conn(cluster), "timeout": 30}}])
    assert failed(run[0]) and run[0]["changed"] is False and "not initiated" in run[0]["msg"], run[0]


BAD_OPTIONS = [
    (PG, {"timeout": "nan"}, "timeout must be"),
    (PG, {"timeout": 0}, "timeout must be"),
    (PG, {"timeout": "inf"}, "timeout must be"),
    (PG, {"port": 70000}, "port must be from 1 to 65535"),
    (PG, {"server_selection_timeout": -1}, "server_selection_timeout must be"),
    (PG, {"seeds": ["not a host!!"]}, "not a host name"),
    (PG, {"seeds": [" "]}, "empty"),
    (PG, {"records": [{"name": "sm1", "mongo_address": "h:99999", "api_address": "h:1", "wants_vote": True}]},
     "port must be a number from 1 to 65535"),
    (PG, {"records": [{"name": "sm1", "mongo_address": "h:1", "api_address": "h:2", "wants_vote": "maybe"}]},
     "wants_vote"),
    (PG, {"status": {"pool": [{"name": "sm1", "address": "a:b:c"}]}}, "a:b:c"),
    (PG, {"status": {"api_timeout": 0}}, "api_timeout must be"),
    (EA_, {"n": 3, "api_user": {"name": "u", "password": "short", "roles": []}}, "at least 8 characters"),
    (EA_, {"n": 3, "api_user": {"name": " ", "password": "long-enough", "roles": []}}, "must not be empty"),
    (STATUS, {"port": 0}, "port must be from 1 to 65535"),
    (STATUS, {"server_selection_timeout": "nan"}, "server_selection_timeout must be"),
    (STATUS, {"pool": [{"name": "sm1", "address": "a:b:c"}]}, "a:b:c"),
    (STATUS, {"api_timeout": 0}, "api_timeout must be"),
    (STATUS, {"api_scheme": "ftp"}, "api_scheme"),
]


def test_bad_options_fail_with_a_message_before_any_connection(tmp_path):
    counter = ConnectionCounter("127.20.0.1")
    try:
        tasks = [{module: {"seeds": [f"127.20.0.1:{counter.port}"], "server_selection_timeout": 2, **options}}
                 for module, options, _fragment in BAD_OPTIONS]
        run = run_tasks(tmp_path, tasks)
    finally:
        counter.close()
    assert len(run.results) == len(BAD_OPTIONS), run.stdout + run.stderr
    for (module, options, fragment), result in zip(BAD_OPTIONS, run.results):
        assert failed(result) and result.get("changed") is False, (module, options, result)
        assert fragment in result["msg"], (module, options, result["msg"])
        # ansible-core adds exception: "(traceback unavailable)" to every failure; a real one would be in there.
        assert "Traceback" not in result["msg"] + result.get("exception", ""), (module, options, result)
    assert counter.accepted == 0
