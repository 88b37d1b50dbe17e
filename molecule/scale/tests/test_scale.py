"""scale: 3 -> 5 -> 7 by AWX jobs: job 1 deploys, --check and status.yml change nothing, a job without the
credential stops before it changes anything, the answer "5" grows the set, the same job again changes nothing, "7"
grows it to 7; n=4 and n=9 fail clearly and change nothing. (That n=3 never shrinks a set is shown by
tests/integration/test_modules.py and the unit tests; a 7-host job for it here cost the make test budget more than
it showed.)

The tests run in file order and build on each other (one set, grown step by step). The scenario's converge only makes
what an operator puts in the credential before the first job (converge.yml: the four secrets and a CA). Every job is
run the way an AWX job template runs it (awxjob.py): ansible-runner, a new private data directory per job, the
collection installed from its built tarball, the survey's answers as text, the secrets and the deployment CA from a
credential of the shipped type. A job's directory holds no secrets directory of the scenario's: each job has only
its credential, and reads the certificates the machines hold.
"""

import awxjob
import hatest
import pytest

MACHINES = [f"m{i}" for i in range(1, 8)]
HELD_PLAY = "Read the certificates the state machines hold that the controller lacks"
CERTIFICATES = "Keep the deployment CA and a certificate for each state machine"


def snapshot():
    """What must not change: the config version, the voters and the machine records."""
    config = hatest.replset_config()
    with hatest.client() as c:
        records = sorted((r["_id"], r["wants_vote"]) for r in c.stateserver.machines.find())
    return config["version"], hatest.voters(config), records


def host_states():
    return {name: hatest.host_state(name) for name in MACHINES}


class Awx:
    """Launches of the ensure_ha job template against the scenario's hosts, numbered as AWX numbers jobs."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.collections = awxjob.install_collection(workdir / "project-sync")
        self.number = 0

    @staticmethod
    def inventory():
        """The scenario's hosts and group_vars (molecule.yml) as an AWX inventory holds them: no secrets directory
        (the credential carries the secrets) and no SSH key (the machine credential does)."""
        hostvars = {h["name"]: {"ansible_host": h["ip"], "remote_tower_enabled": "true", "remote_tower_id": i}
                    for i, h in enumerate(hatest.hosts(), 1)}
        wheels = hatest.EPHEMERAL / "hosts" / "wheels"
        group_vars = {"ansible_python_interpreter": "/usr/bin/python3", "mongod_install_method": "simulator",
                      "mongod_simulator_wheel_dir": str(wheels / "mongosim"),
                      "api_server_wheel_dir": str(wheels / "api"), "mongod_limit_nofile": 8192,
                      # The lab's hosts get new host keys with every create: remember none of them.
                      "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null"}
        return {"all": {"children": ["state_machines"]},
                "state_machines": {"hosts": sorted(hostvars), "vars": group_vars}, "_meta": {"hostvars": hostvars}}

    @staticmethod
    def credential():
        """The inputs of the deployment's credential: the secrets and the CA the first deployment made."""
        return {"mongod_admin_password": hatest.admin_password(), "mongod_keyfile_content": hatest.keyfile(),
                "state_machine_api_token": hatest.api_token(),
                "api_server_mongo_password": hatest.api_mongo_credentials()[1],
                "stateserver_tls_ca_certificate": hatest.ca_file().read_text(),
                "stateserver_tls_ca_key": hatest.ca_key()}

    def launch(self, n, with_credential=True):
        self.number += 1
        return awxjob.run_job(self.workdir, self.number, collections=self.collections, inventory=self.inventory(),
                              answers={"n": n}, credential=self.credential() if with_credential else None,
                              ssh_user="root", ssh_key=hatest.ssh_key(),
                              # The lab's choice (molecule.yml), as a job template's environment would set it.
                              envvars={"ANSIBLE_PIPELINING": "True"})


@pytest.fixture(scope="module")
def awx(tmp_path_factory):
    return Awx(tmp_path_factory.mktemp("awx"))


def ran_job(job):
    assert job.rc == 0, (job.failed(), job.stdout[-4000:])
    return job


def test_job_1_deploys_three_voters_from_the_credential(awx):
    job = ran_job(awx.launch("3"))
    hatest.healthy_voters(3)
    assert hatest.voters(hatest.replset_config()) == MACHINES[:3]
    # The credential's CA signed what the members serve; the first deployment generated no secret of its own.
    certificates = job.result(CERTIFICATES)
    assert certificates["ca"]["action"] == "given"
    assert sorted(certificates["certificates"]) == MACHINES[:3]
    with hatest.client() as c:  # the admin password and the CA from the credential (the scenario's secrets)
        assert c.admin.command("ping")["ok"] == 1


def test_check_mode_prints_the_plan_and_touches_nothing():
    before = snapshot()
    proc = hatest.run_playbook("ensure-ha.yml", "-e", "n=5", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "adding machines: m4, m5" in proc.stdout
    assert snapshot() == before
    for name in ("m4", "m5"):  # nothing was installed or configured on the machines the plan would add
        assert hatest.ssh_run(name, "test -e /etc/mongod.conf || systemctl cat mongod").returncode != 0


def test_status_playbook_reads_and_changes_nothing():
    before = snapshot()
    proc = hatest.run_playbook("status.yml")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert snapshot() == before


def test_a_job_without_the_credential_stops_before_it_changes_anything(awx):
    before, states = snapshot(), host_states()
    job = awx.launch("5", with_credential=False)
    assert job.rc != 0
    assert job.failed() == [("localhost", "Stop when the secrets cannot be used")]
    # Without the credential the job has no CA to check a machine's certificate against: no machine's file is even
    # read (at most the first play decides, on each machine, to leave it). No plan, no provisioning, no change.
    on_machines = [d for d in job.results() if d["host"] != "localhost"]
    assert {d["play"] for d in on_machines} <= {HELD_PLAY}, on_machines
    assert {d["task_action"] for d in on_machines} <= {"ansible.builtin.meta", "ansible.builtin.set_fact"}, on_machines
    assert job.changed() == []
    assert snapshot() == before and host_states() == states


def test_grow_to_five_by_a_job_whose_survey_answer_is_5(awx):
    mongod_tls = {name: hatest.ssh(name, "find /etc/mongod/tls -printf '%p %T@\\n' | sort") for name in MACHINES[:3]}
    job = ran_job(awx.launch("5"))
    hatest.healthy_voters(5)
    assert hatest.voters(hatest.replset_config()) == MACHINES[:5]
    # The members kept the certificates they serve: the job adopted them instead of issuing new ones. Certificates
    # were kept only for the machines the plan provisions (its last result is the step after the plan): m6 and m7,
    # in no set, got none.
    certificates = job.result(CERTIFICATES)
    assert certificates["ca"]["action"] == "given"
    assert sorted(certificates["certificates"]) == MACHINES[:5]
    assert {name: certificates["certificates"][name]["action"] for name in MACHINES[:3]} == {
        name: "adopted" for name in MACHINES[:3]}
    assert {name: hatest.ssh(name, "find /etc/mongod/tls -printf '%p %T@\\n' | sort")
            for name in MACHINES[:3]} == mongod_tls


def test_the_same_job_again_in_a_new_directory_changes_nothing(awx):
    before, states = snapshot(), host_states()
    job = ran_job(awx.launch("5"))
    # No host changed, the controller included: the job adopted the five members' certificates and issued none,
    # not even for m6 and m7, which are in no set and hold none (no plan provisions them).
    assert job.changed() == []
    assert {name: (c["action"], c["api"]["action"]) for name, c in job.result(CERTIFICATES)["certificates"].items()} \
        == {name: ("adopted", "adopted") for name in MACHINES[:5]}
    assert snapshot() == before and host_states() == states


def test_grow_to_seven(awx):
    ran_job(awx.launch("7"))
    status = hatest.healthy_voters(7)
    assert hatest.voters(hatest.replset_config()) == MACHINES
    assert len(hatest.primaries(status)) == 1


@pytest.mark.parametrize("n", [4, 9], ids=["even", "above-seven"])
def test_invalid_n_fails_clearly_and_changes_nothing(n):
    before = snapshot()
    proc = hatest.run_playbook("ensure-ha.yml", "-e", f"n={n}")
    assert proc.returncode != 0
    assert "n must be 3, 5 or 7" in proc.stdout + proc.stderr
    assert snapshot() == before
