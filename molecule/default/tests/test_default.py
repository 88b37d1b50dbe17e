"""default: 1 -> 3 state machines, then m1 retired for the spare m4 (the seed's gap: no way to switch away from a
state server). Runs on every host (testinfra) and reads the set through pymongo."""

import socket
import threading

import hatest
import yaml

EXPECTED = ["m1", "m2", "m3"]


def test_config_file_names_the_set_port_bind_addresses_and_security(host):
    conf = yaml.safe_load(host.file("/etc/mongod.conf").content_string)
    me = hatest.address(host.backend.get_hostname())
    assert conf["replication"]["replSetName"] == "stateserver"
    assert conf["net"]["port"] == 37017
    assert conf["net"]["bindIp"].split(",") == [me, "127.0.0.1"]
    assert conf["security"]["authorization"] == "enabled"
    assert conf["security"]["keyFile"] == "/etc/mongod.keyfile"


def test_tls_is_required_with_the_machines_files_private_to_each_service(host):
    name = host.backend.get_hostname()
    conf = yaml.safe_load(host.file("/etc/mongod.conf").content_string)
    assert conf["net"]["tls"]["mode"] == "requireTLS"
    secrets = hatest.EPHEMERAL / "secrets"
    ca = secrets.joinpath("ca.crt").read_text().strip()
    cert = secrets.joinpath("certs", f"{name}.crt").read_text().strip()
    pem = host.file(conf["net"]["tls"]["certificateKeyFile"])
    assert (pem.user, pem.mode) == ("mongodb", 0o400)
    assert pem.content_string.startswith(cert)
    assert host.file(conf["net"]["tls"]["CAFile"]).content_string.strip() == ca
    key = host.file("/etc/stateserver-api/tls/server.key")
    assert (key.user, key.mode) == ("stateserver-api", 0o400)
    # The API server serves a certificate of its own (certs/api/), not the member's: under x509 member
    # authentication the member's key is a member credential.
    api_cert = secrets.joinpath("certs", "api", f"{name}.crt").read_text().strip()
    assert api_cert != cert
    assert host.file("/etc/stateserver-api/tls/server.crt").content_string.strip() == api_cert
    assert host.file("/etc/stateserver-api/tls/ca.crt").content_string.strip() == ca


def test_keyfile_is_readable_by_the_service_user_only(host):
    keyfile = host.file("/etc/mongod.keyfile")
    assert keyfile.user == "mongodb"
    assert keyfile.mode == 0o400
    assert keyfile.content_string.strip() == hatest.keyfile()


def test_mongod_service_is_enabled_and_running_under_systemd(host):
    service = host.service("mongod")
    assert service.is_running
    assert service.is_enabled
    assert host.process.get(comm="systemd", pid=1)


def test_mongod_listens_on_the_host_address_not_everywhere(host):
    me = hatest.address(host.backend.get_hostname())
    assert host.socket(f"tcp://{me}:37017").is_listening
    assert not host.socket("tcp://0.0.0.0:37017").is_listening
    with socket.create_connection((me, 37017), timeout=5):
        pass


def test_replica_set_has_three_tagged_voting_members():
    config = hatest.replset_config()
    assert config["_id"] == "stateserver"
    assert hatest.voters(config) == EXPECTED
    for member in config["members"]:
        assert member["host"] == f"{hatest.address(hatest.machine_of(member))}:37017"


def test_exactly_one_primary_and_two_secondaries():
    status = hatest.healthy_voters(3)
    assert len(hatest.primaries(status)) == 1
    assert sorted(m["stateStr"] for m in status["members"]) == ["PRIMARY", "SECONDARY", "SECONDARY"]


def test_every_machine_has_a_record_that_wants_a_vote():
    with hatest.client() as c:
        records = {r["_id"]: r for r in c.stateserver.machines.find()}
    assert sorted(records) == EXPECTED
    for name, record in records.items():
        assert record["wants_vote"] is True
        assert record["mongo_address"] == f"{hatest.address(name)}:37017"


def test_api_server_answers_ready_on_every_machine():
    token = hatest.api_token()
    for name in EXPECTED:
        hatest.wait_until(lambda name=name: hatest.api(name, "GET", "/v1/ready", token).status_code == 200,
                          60, f"the API on {name} to answer ready")


def test_a_config_change_restarts_members_one_at_a_time_primary_last():
    status = hatest.healthy_voters(3)
    old_primary = hatest.machine_of_host(hatest.primaries(status)[0])
    before = {name: hatest.main_pid_start_us(name) for name in EXPECTED}

    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3", "-e", "mongod_limit_nofile=8000")
    assert proc.returncode == 0, proc.stdout[-4000:]

    after = {name: hatest.main_pid_start_us(name) for name in EXPECTED}
    assert all(after[name] > before[name] for name in EXPECTED), (before, after)
    # The primary was restarted last, after a step-down: someone else leads now.
    assert max(after, key=after.get) == old_primary
    status = hatest.healthy_voters(3)
    assert hatest.machine_of_host(hatest.primaries(status)[0]) != old_primary
    for name in EXPECTED:
        assert "LimitNOFILE=8000" in hatest.ssh(name, "cat /etc/systemd/system/mongod.service")


def set_view():
    """The replica set members (by machine, with votes) and the machine records: what a retirement changes."""
    config = hatest.replset_config()
    with hatest.client() as c:
        records = sorted((r["_id"], r["wants_vote"], r["mongo_address"]) for r in c.stateserver.machines.find())
    return sorted((hatest.machine_of(m), m["host"], m.get("votes", 1)) for m in config["members"]), records


def test_retire_check_mode_changes_nothing():
    before = set_view()
    proc = hatest.run_playbook("retire-machine.yml", "-e", "machine=m1", "-e", "mongod_limit_nofile=8000", "--check")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert set_view() == before


class Writer(threading.Thread):
    """A unit's writes with w: majority, one after another; keeps the ids the set acknowledged."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.acked, self.errors = [], []

    def run(self):
        with hatest.client(w="majority", wtimeoutMS=10000, serverSelectionTimeoutMS=30000) as c:
            i = 0
            while not self.stop.is_set():
                try:
                    c.stateserver.retire_probe.insert_one({"_id": i})
                    self.acked.append(i)
                except Exception as exc:  # noqa: BLE001 - an unacknowledged write is counted, not fatal
                    self.errors.append(repr(exc))
                i += 1
                self.stop.wait(0.2)


def test_retire_m1_moves_its_vote_to_the_spare_while_a_unit_writes():
    writer = Writer()
    writer.start()
    try:
        # The role's settings as the scenario last applied them, so the machines that stay are not restarted.
        proc = hatest.run_playbook("retire-machine.yml", "-e", "machine=m1", "-e", "mongod_limit_nofile=8000")
    finally:
        writer.stop.set()
        writer.join(60)
    assert proc.returncode == 0, proc.stdout[-4000:]

    hatest.healthy_voters(3)
    members, records = set_view()
    assert [(member[0], member[2]) for member in members] == [("m2", 1), ("m3", 1), ("m4", 1)]
    assert f"{hatest.address('m1')}:37017" not in [member[1] for member in members]
    assert [(record[0], record[1]) for record in records] == [("m2", True), ("m3", True), ("m4", True)]

    for unit in ("stateserver-api", "mongod"):
        assert hatest.ssh_run("m1", f"systemctl is-active {unit}").stdout.strip() in ("inactive", "failed")
        assert hatest.ssh_run("m1", f"systemctl is-enabled {unit}").stdout.strip() == "disabled"
    assert hatest.ssh("m1", "ls -A /var/lib/mongodb").strip(), "m1's data directory was not kept"

    assert len(writer.acked) > 10, writer.errors[-5:]
    with hatest.client(w="majority") as c:
        stored = {d["_id"] for d in c.stateserver.retire_probe.find({}, {"_id": 1})}
    assert set(writer.acked) <= stored

    token = hatest.api_token()
    m1_api = f"{hatest.address('m1')}:17070"
    for name in ("m2", "m3", "m4"):
        published = hatest.wait_until(
            lambda name=name: hatest.api(name, "GET", "/v1/api-addresses", token).json()["addresses"], 60,
            f"the API on {name} to publish addresses")
        assert m1_api not in published, (name, published)
        assert f"{hatest.address('m4')}:17070" in published, (name, published)
