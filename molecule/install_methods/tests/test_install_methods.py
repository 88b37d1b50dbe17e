"""install_methods: one 5-member replica set whose members came from every install method (binary .tgz, binary
executable, .deb, apt repository, simulator), then bad input that changes nothing, then an upgrade to a new build
that restarts the upgraded members one at a time, primary last, without losing a write.

The artifacts are stand-ins (lab/standins.py): the simulator packed as a mongod executable, not MongoDB.
The tests run in file order and build on each other.
"""

import hashlib
import os
import re
import subprocess
import sys

import hatest
import pytest
import yaml
from pymongo.errors import PyMongoError

STANDINS = hatest.EPHEMERAL / "standins"
MACHINES = ["m1", "m2", "m3", "m4", "m5"]
# Where each host's method puts mongod (roles/mongod/vars/main.yml); m5 (simulator) is the odd one out.
INSTALLED = {"m1": "/opt/mongodb/bin/mongod", "m2": "/usr/local/bin/mongod", "m3": "/usr/bin/mongod",
             "m4": "/usr/bin/mongod"}
SIMULATOR = "/opt/mongosim/bin/mongosim"
PACKAGES = {"m3": "mongosim-standin-server", "m4": "mongodb-org-server"}
REPO_KEY = "/etc/apt/keyrings/mongodb-server-7.0.asc"
# A PLAY RECAP line: host, then its changed count.
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.MULTILINE)


def local_sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_sha256(name, path):
    return hatest.ssh(name, f"sha256sum {path}").split()[0]


def package_version(name):
    return hatest.ssh(name, f"dpkg-query -W -f='${{Status}} ${{Version}}' {PACKAGES[name]}").strip()


def main_argv(name):
    pid = hatest.ssh(name, "systemctl show -p MainPID --value mongod").strip()
    return hatest.ssh(name, f"tr '\\0' '\\n' < /proc/{pid}/cmdline").split("\n")


def start_times():
    return {name: hatest.main_pid_start_us(name) for name in MACHINES}


def build_standins(build):
    subprocess.run([sys.executable, str(hatest.ROOT / "lab" / "standins.py"), "build",
                    f"--wheels={hatest.EPHEMERAL / 'hosts' / 'wheels' / 'mongosim'}", f"--out={STANDINS}",
                    f"--build={build}"], check=True, capture_output=True)


def test_each_host_runs_mongod_from_where_its_method_put_it():
    expected = local_sha256(STANDINS / "mongod")
    for name, path in {**INSTALLED, "m5": SIMULATOR}.items():
        if name in INSTALLED:
            assert host_sha256(name, path) == expected, name
        assert f"path={path} ;" in hatest.ssh(name, "systemctl show -p ExecStart --value mongod"), name
        assert path in main_argv(name), name
    assert package_version("m3") == "install ok installed 0.1.1"
    # The executable and the package methods leave no unpacked archive behind.
    assert hatest.ssh_run("m2", "test -e /opt/mongodb/bin/mongod").returncode != 0
    assert hatest.ssh_run("m3", "test -e /usr/local/bin/mongod").returncode != 0


def test_the_repository_method_installed_mongodb_org_server_from_the_signed_repository():
    assert package_version("m4") == "install ok installed 0.1.1"
    policy = hatest.ssh("m4", "apt-cache policy mongodb-org-server")
    assert "http://10.178.6.1:18080/apt/debian bookworm/mongodb-org/7.0/main" in policy
    sources = hatest.ssh("m4", "cat /etc/apt/sources.list.d/mongodb-org-7.0.list")
    assert f"[signed-by={REPO_KEY}]" in sources
    assert hatest.ssh("m4", f"cat {REPO_KEY}") == (STANDINS / "repo" / "server-7.0.asc").read_text()


def test_configuration_is_identical_whatever_the_method():
    confs, units = {}, {}
    for name, path in {**INSTALLED, "m5": SIMULATOR}.items():
        conf = yaml.safe_load(hatest.ssh(name, "cat /etc/mongod.conf"))
        assert conf["net"].pop("bindIp").split(",") == [hatest.address(name), "127.0.0.1"]
        confs[name] = conf
        units[name] = hatest.ssh(name, "cat /etc/systemd/system/mongod.service").replace(path, "MONGOD")
        keyfile = hatest.ssh(name, "stat -c '%U %a' /etc/mongod.keyfile").strip()
        assert keyfile == "mongodb 400", name
    assert all(confs[name] == confs["m1"] for name in MACHINES), confs
    assert all(units[name] == units["m1"] for name in MACHINES), units


def test_the_five_form_one_set_with_one_primary_and_their_api_servers_answer():
    status = hatest.healthy_voters(5)
    assert hatest.voters(hatest.replset_config()) == MACHINES
    assert len(hatest.primaries(status)) == 1
    token = hatest.api_token()
    for name in MACHINES:
        hatest.wait_until(lambda name=name: hatest.api(name, "GET", "/v1/ready", token).status_code == 200,
                          60, f"the API on {name} to answer ready")


def test_a_missing_archive_fails_clearly_and_changes_nothing():
    version = hatest.replset_config()["version"]
    before = start_times()
    missing = STANDINS / "no-such-mongodb.tgz"
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=5", "-e", f"mongod_binary_file={missing}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"mongod_binary_file must be an existing file on the controller: {missing}" in out
    assert "Provisioning failed on m1, m2" in out and "replica set was not changed" in out
    assert start_times() == before
    assert hatest.replset_config()["version"] == version
    assert host_sha256("m1", INSTALLED["m1"]) == local_sha256(STANDINS / "mongod")


@pytest.mark.skipif(bool(os.environ.get("MONGOD_BIN")), reason="a copy of $MONGOD_BIN has no second build")
def test_an_upgrade_restarts_members_one_at_a_time_primary_last_and_keeps_writes():
    upgraded = list(INSTALLED)
    with hatest.client(w="majority") as c:
        c.stateserver.upgrade_probe.insert_one({"_id": "before-upgrade"})
        # The interesting case is an upgraded primary: if the simulator host m5 leads, it steps down first
        # (it cannot be re-elected for 60 s, so one of m1..m4 takes over).
        if hatest.machine_of_host(hatest.primaries(hatest.healthy_voters(5))[0]) == "m5":
            try:
                c.admin.command("replSetStepDown", 60)
            except PyMongoError:
                pass  # the old primary drops its connections while it steps down
    old_primary = hatest.wait_until(lambda: (hatest.primaries(hatest.replset_status()) or [None])[0], 60,
                                    "a primary after the step-down")
    old_primary = hatest.machine_of_host(old_primary)
    assert old_primary in upgraded
    before = start_times()

    build_standins(2)
    # The repository method upgrades when the operator pins the new version; the other hosts ignore it.
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=5", "-e", "mongod_package_version=0.1.2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    expected = local_sha256(STANDINS / "mongod")
    for name, path in INSTALLED.items():
        assert host_sha256(name, path) == expected, name
    assert package_version("m3") == "install ok installed 0.1.2"
    assert package_version("m4") == "install ok installed 0.1.2"
    after = start_times()
    assert all(after[name] > before[name] for name in upgraded), (before, after)
    assert after["m5"] == before["m5"]  # nothing of the simulator host changed
    assert max(after, key=after.get) == old_primary  # restarted last, after a step-down
    status = hatest.healthy_voters(5)
    assert hatest.machine_of_host(hatest.primaries(status)[0]) != old_primary
    with hatest.client() as c:
        assert c.stateserver.upgrade_probe.find_one({"_id": "before-upgrade"}) is not None


def test_a_second_run_after_the_upgrade_changes_and_restarts_nothing():
    """The scenario's idempotence check (it has no molecule idempotence step): every install method's no-op path.
    The same inputs as the upgrade (its pinned version): a run without the pin is a changed input, which the
    repository host records anew."""
    version = hatest.replset_config()["version"]
    before = start_times()
    pin = () if os.environ.get("MONGOD_BIN") else ("-e", "mongod_package_version=0.1.2")  # no upgrade ran then
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=5", *pin)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # The play's own per-host totals, as molecule's idempotence step reads them.
    recap = dict(RECAP.findall(proc.stdout))
    assert sorted(recap) == sorted(["localhost", *MACHINES]), proc.stdout[-4000:]
    assert {host: int(changed) for host, changed in recap.items() if changed != "0"} == {}, proc.stdout[-8000:]
    assert start_times() == before
    assert hatest.replset_config()["version"] == version
