"""install_methods: one replica set whose members came from three install methods (binary .tgz, binary executable,
.deb), then bad input that changes nothing, then an upgrade to a new build that restarts the members one at a
time, primary last, without losing a write.

The artifacts are stand-ins (lab/standins.py): the simulator packed as a mongod executable, not MongoDB.
The tests run in file order and build on each other.
"""

import hashlib
import os
import subprocess
import sys

import hatest
import pytest
import yaml

STANDINS = hatest.EPHEMERAL / "standins"
MACHINES = ["m1", "m2", "m3"]
# Where each host's method puts mongod (roles/mongod/vars/main.yml).
INSTALLED = {"m1": "/opt/mongodb/bin/mongod", "m2": "/usr/local/bin/mongod", "m3": "/usr/bin/mongod"}
PACKAGE = "mongosim-standin-server"


def local_sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def host_sha256(name, path):
    return hatest.ssh(name, f"sha256sum {path}").split()[0]


def package_version(name):
    return hatest.ssh(name, f"dpkg-query -W -f='${{Status}} ${{Version}}' {PACKAGE}").strip()


def main_argv(name):
    pid = hatest.ssh(name, "systemctl show -p MainPID --value mongod").strip()
    return hatest.ssh(name, f"tr '\\0' '\\n' < /proc/{pid}/cmdline").split("\n")


def start_times():
    return {name: hatest.main_pid_start_us(name) for name in MACHINES}


def build_standins(build):
    subprocess.run([sys.executable, str(hatest.ROOT / "lab" / "standins.py"),
                    f"--wheels={hatest.EPHEMERAL / 'hosts' / 'wheels' / 'mongosim'}", f"--out={STANDINS}",
                    f"--build={build}"], check=True, capture_output=True)


def test_each_host_runs_mongod_from_where_its_method_put_it():
    expected = local_sha256(STANDINS / "mongod")
    for name, path in INSTALLED.items():
        assert host_sha256(name, path) == expected, name
        assert f"path={path} ;" in hatest.ssh(name, "systemctl show -p ExecStart --value mongod"), name
        assert path in main_argv(name), name
    assert package_version("m3") == "install ok installed 0.1.1"
    # The executable and the package methods leave no unpacked archive behind.
    assert hatest.ssh_run("m2", "test -e /opt/mongodb/bin/mongod").returncode != 0
    assert hatest.ssh_run("m3", "test -e /usr/local/bin/mongod").returncode != 0


def test_configuration_is_identical_whatever_the_method():
    confs, units = {}, {}
    for name, path in INSTALLED.items():
        conf = yaml.safe_load(hatest.ssh(name, "cat /etc/mongod.conf"))
        assert conf["net"].pop("bindIp").split(",") == [hatest.address(name), "127.0.0.1"]
        confs[name] = conf
        units[name] = hatest.ssh(name, "cat /etc/systemd/system/mongod.service").replace(path, "MONGOD")
        keyfile = hatest.ssh(name, "stat -c '%U %a' /etc/mongod.keyfile").strip()
        assert keyfile == "mongodb 400", name
    assert confs["m1"] == confs["m2"] == confs["m3"]
    assert units["m1"] == units["m2"] == units["m3"]


def test_the_three_form_one_set_with_one_primary_and_their_api_servers_answer():
    status = hatest.healthy_voters(3)
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
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3", "-e", f"mongod_binary_file={missing}")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"mongod_binary_file must be an existing file on the controller: {missing}" in out
    assert "Provisioning failed on m1, m2" in out and "replica set was not changed" in out
    assert start_times() == before
    assert hatest.replset_config()["version"] == version
    assert host_sha256("m1", INSTALLED["m1"]) == local_sha256(STANDINS / "mongod")


@pytest.mark.skipif(bool(os.environ.get("MONGOD_BIN")), reason="a copy of $MONGOD_BIN has no second build")
def test_an_upgrade_restarts_members_one_at_a_time_primary_last_and_keeps_writes():
    with hatest.client(w="majority") as c:
        c.stateserver.upgrade_probe.insert_one({"_id": "before-upgrade"})
    old_primary = hatest.machine_of_host(hatest.primaries(hatest.healthy_voters(3))[0])
    before = start_times()

    build_standins(2)
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode == 0, proc.stdout[-4000:]

    expected = local_sha256(STANDINS / "mongod")
    for name, path in INSTALLED.items():
        assert host_sha256(name, path) == expected, name
    assert package_version("m3") == "install ok installed 0.1.2"
    after = start_times()
    assert all(after[name] > before[name] for name in MACHINES), (before, after)
    assert max(after, key=after.get) == old_primary  # restarted last, after a step-down
    status = hatest.healthy_voters(3)
    assert hatest.machine_of_host(hatest.primaries(status)[0]) != old_primary
    with hatest.client() as c:
        assert c.stateserver.upgrade_probe.find_one({"_id": "before-upgrade"}) is not None


def test_a_second_run_after_the_upgrade_restarts_nothing():
    version = hatest.replset_config()["version"]
    before = start_times()
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=3")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert start_times() == before
    assert hatest.replset_config()["version"] == version
