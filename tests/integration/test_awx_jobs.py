"""ensure_ha (and retire_machine) run the way AWX runs a job template, through ansible-runner, against a keyfile+auth
simulator set.

Each job gets a new private data directory laid out as AWX lays it out (shared/research/awx-jobs.md §1, §6): the
project is a copy of extensions/awx/project (the ensure_ha.yml the job template names), the collection comes from
requirements_collections/ (what AWX's project sync installs) and nothing else is on the collections path, the
inventory is an executable script in inventory/, the survey answers are validated against the shipped survey as AWX
validates a launch and written to env/extravars tagged !unsafe, and the credential is rendered from the shipped
credential type's injectors into a 0400 file passed with -e @file in env/cmdline. The job template's job type is
check: a run job would provision this machine. Results are read from ansible-runner's events; the set is read back.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import stat
import sys
from pathlib import Path

import ansible_runner
import pytest
import yaml
from cluster import Cluster
from cryptography import x509
from jinja2.sandbox import ImmutableSandboxedEnvironment
from playbook import REPO, run_tasks
from pymongo import MongoClient
from test_modules import ea, pg

pytestmark = pytest.mark.timeout(600)

AWX = REPO / "extensions" / "awx"
PASSWORD = "awx-job-admin-{{ literal }}"
CREDENTIAL = {"mongod_admin_password": PASSWORD, "mongod_keyfile_content": "K3yf1le" * 20,
              "state_machine_api_token": "awx-job-api-token", "api_server_mongo_password": "awx-job-api-mongo-pw"}
PLAN = "Plan which machines keep, gain or lose a vote"
CONVERGE = "Move the replica set to the planned voters one safe reconfig at a time"
CERTS = "stateserver.ha.deployment_certificates"


class UnsafeDumper(yaml.SafeDumper):
    """Strings written as AWX writes job extra vars: tagged !unsafe, so Ansible never templates an answer."""


UnsafeDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar("!unsafe", value))


def survey_answers(answers: dict, template: str = "ensure_ha") -> dict:
    """The extra vars AWX derives from a launch: each answer checked as AWX checks it, defaults for the rest."""
    spec = yaml.safe_load((AWX / f"survey_{template}.yml").read_text())["spec"]
    out = {}
    for q in spec:
        value = answers.get(q["variable"], q.get("default"))
        if q["type"] == "multiplechoice":
            assert isinstance(value, str) and value in q["choices"], (q["variable"], value)
        if q["type"] == "integer":
            # A JSON integer: AWX refuses "5" and true.
            assert isinstance(value, int) and not isinstance(value, bool), (q["variable"], value)
            assert q["min"] <= value <= q["max"], (q["variable"], value)
        out[q["variable"]] = value
    assert set(answers) <= set(out), "AWX drops extra vars that are not survey questions"
    return out


def job(tmp: Path, number: int, cluster: Cluster, answers: dict, credential: dict | None,
        host_vars: dict[str, dict] | None = None, job_template: str = "ensure_ha") -> dict[str, dict]:
    """One check job in a new private data directory; {task name: localhost's result}, and under "__job__" the
    return code, the secrets files the job left, every (host, task) that reported a change and every state
    machine's results. The directory is deleted. host_vars: the inventory's variables of each state machine beyond
    its connection; without them the members are plain (the opt-out). job_template: ensure_ha or retire_machine,
    whose survey and playbook the job uses."""
    pdd = tmp / f"awx_{number}_job"
    shutil.copytree(AWX / "project", pdd / "project")
    link = pdd / "requirements_collections" / "ansible_collections" / "stateserver" / "ha"
    link.parent.mkdir(parents=True)
    link.symlink_to(REPO)
    (pdd / "inventory").mkdir()
    hosts = {name: {"ansible_host": host, "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    "remote_tower_enabled": "true", "remote_tower_id": i + 1,
                    **(host_vars[name] if host_vars else {"stateserver_tls": False})}
             for i, (name, host) in enumerate(zip(cluster.names, cluster.hosts))}
    inventory = {"all": {"children": ["state_machines"]}, "state_machines": {"hosts": list(hosts)},
                 "_meta": {"hostvars": hosts}}
    script = pdd / "inventory" / "hosts"
    script.write_text(f"#!{sys.executable}\nprint({json.dumps(inventory)!r})\n")
    script.chmod(0o700)
    (pdd / "env").mkdir()
    extravars = {**survey_answers(answers, job_template), "awx_job_id": number,
                 "awx_job_template_name": f"stateserver.ha {job_template}"}
    (pdd / "env" / "extravars").write_text(yaml.dump(extravars, Dumper=UnsafeDumper))
    cmdline = "--check"
    if credential is not None:
        template = yaml.safe_load((AWX / "credential_type.yml").read_text())["injectors"]["extra_vars"]
        sandbox = ImmutableSandboxedEnvironment()
        injected = pdd / "env" / "tmpcredential"
        injected.write_text(yaml.dump({k: sandbox.from_string(v).render(**credential) for k, v in template.items()},
                                      Dumper=UnsafeDumper))
        injected.chmod(0o400)
        cmdline += f" -e @{injected}"
    (pdd / "env" / "cmdline").write_text(cmdline)
    env = {"ANSIBLE_COLLECTIONS_PATH": str(pdd / "requirements_collections"), "ANSIBLE_HOME": str(pdd / "home"),
           "ANSIBLE_LOCAL_TEMP": str(pdd / "home" / "tmp"), "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_LOCALHOST_WARNING": "False", "JOB_ID": str(number)}
    try:
        run = ansible_runner.run(private_data_dir=str(pdd), playbook=f"{job_template}.yml", ident=str(number),
                                 envvars=env, suppress_env_files=True, quiet=True, timeout=300)
        tasks = {e["event_data"]["task"]: {**e["event_data"]["res"], "failed": e["event"] == "runner_on_failed"}
                 for e in run.events if e["event"] in ("runner_on_ok", "runner_on_failed")
                 and e["event_data"].get("host") == "localhost"}
        results = [e for e in run.events if e["event"] in ("runner_on_ok", "runner_on_failed")]
        machines: dict[str, dict] = {}
        for e in results:
            if e["event_data"].get("host") != "localhost":
                machines.setdefault(e["event_data"]["host"], {})[e["event_data"]["task"]] = e["event_data"]["res"]
        tasks["__job__"] = {"rc": run.rc, "status": run.status,
                            "secrets_written": sorted(str(p.relative_to(pdd)) for p in pdd.rglob("*")
                                                      if "stateserver-secrets" in p.parts),
                            "changed": sorted({(e["event_data"]["host"], e["event_data"]["task"]) for e in results
                                               if e["event_data"]["res"].get("changed")}),
                            "stored": {str(p.relative_to(pdd / "stateserver-secrets")): p.read_text()
                                       for p in pdd.glob("stateserver-secrets/**/*") if p.is_file()},
                            "machines": machines}
        return tasks
    finally:
        shutil.rmtree(pdd)


def admin(cluster: Cluster) -> MongoClient:
    return MongoClient(cluster.addresses[:3], replicaSet=cluster.set_name, username="admin", password=PASSWORD,
                       authSource="admin", serverSelectionTimeoutMS=10000)


def state(cluster: Cluster) -> tuple[dict, list[dict]]:
    with admin(cluster) as c:
        config = c.admin.command("replSetGetConfig")["config"]
        records = list(c.get_database("stateserver").get_collection("machines").find())
    return config, records


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """3 voting state machines (sm1..sm3) of 5 running members, keyfile and auth on, as a first job leaves them."""
    workdir = tmp_path_factory.mktemp("awx-jobs")
    keyfile = workdir / "keyfile"
    keyfile.write_text(CREDENTIAL["mongod_keyfile_content"])
    keyfile.chmod(stat.S_IRUSR)
    cluster = Cluster(workdir / "cluster", 5, extra_args=("--keyFile", str(keyfile)))
    try:
        config = {"_id": cluster.set_name, "version": 1, "settings": {"electionTimeoutMillis": 1000,
                                                                      "heartbeatIntervalMillis": 200},
                  "members": [{"_id": 0, "host": cluster.addresses[0],
                               "tags": {"stateserver-machine": cluster.names[0]}}]}
        with cluster.direct(0) as c:
            c.admin.command("replSetInitiate", config)
            cluster.wait_for(lambda: c.admin.command("hello").get("isWritablePrimary"), 30, "sm1 to become primary")
            c.admin.command("createUser", "admin", pwd=PASSWORD, roles=["root"])
        # run_tasks writes a playbook, whose strings Ansible templates: the braces in the password stay raw.
        login = {"login_user": "admin", "login_password": "{% raw %}" + PASSWORD + "{% endraw %}"}
        grown = run_tasks(workdir / "grow", [ea(cluster, 3, 5, **login), pg(cluster, **login)])
        assert all(r.get("failed") is not True for r in grown.results), grown.results
        yield cluster, workdir
    finally:
        cluster.stop()


def test_a_survey_answer_5_as_text_plans_growth_with_the_credentials_secrets(deployed):
    cluster, workdir = deployed
    before = state(cluster)
    tasks = job(workdir, 1, cluster, {"n": "5", "down_after": 60}, CREDENTIAL)
    assert tasks["__job__"]["rc"] == 0, tasks
    assert tasks["Say where each secret comes from"]["msg"] == [
        "keyfile: given in variables", "admin_password: given in variables", "api_token: given in variables",
        "api_mongo_password: given in variables"]
    plan = tasks[PLAN]
    assert plan["first_deployment"] is False and sorted(plan["added"]) == ["sm4", "sm5"]
    assert sorted(tasks[CONVERGE]["voters"]) == ["sm1", "sm2", "sm3", "sm4", "sm5"]
    assert tasks["__job__"]["secrets_written"] == []
    assert state(cluster) == before


def test_a_job_in_a_fresh_directory_with_the_same_credential_plans_nothing(deployed):
    cluster, workdir = deployed
    before = state(cluster)
    tasks = job(workdir, 2, cluster, {"n": "3", "down_after": 60}, CREDENTIAL)
    assert tasks["__job__"]["rc"] == 0, tasks
    plan = tasks[PLAN]
    assert not any(plan[key] for key in ("added", "promoted", "demoted", "removed", "repaired")), plan
    # This set was made by hand, without the API server's user: the (check mode) job says the plan would make it.
    assert plan["api_user"]["actions"] == ["create"], plan
    assert tasks[CONVERGE]["steps"] == [] and sorted(tasks[CONVERGE]["voters"]) == ["sm1", "sm2", "sm3"]
    assert tasks["__job__"]["secrets_written"] == []
    assert state(cluster) == before


def test_a_job_without_the_credential_stops_before_the_plan(deployed):
    cluster, workdir = deployed
    before = state(cluster)
    tasks = job(workdir, 3, cluster, {"n": "3", "down_after": 60}, None)
    assert tasks["__job__"]["rc"] != 0
    assert tasks["Stop when the secrets cannot be used"]["failed"] is True
    assert PLAN not in tasks
    assert tasks["__job__"]["secrets_written"] == []
    assert state(cluster) == before


def served_serial(address: str, ca_file: str) -> int:
    """The serial of the certificate a TLS member presents, verified against the deployment CA."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((host, int(port)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_tls_jobs_keep_the_credentials_ca_and_the_certificates_the_machines_hold(tmp_path):
    """Job 1 made the CA and the machine certificates and the members serve them; job 2, in a new directory with
    the CA in the credential, adopts what each machine holds: no new certificate, no change, the same serials.
    sm4 is a spare in the pool (no mongod, no files): no job issues it a certificate, as no plan provisions it."""
    keyfile = tmp_path / "keyfile"
    keyfile.write_text(CREDENTIAL["mongod_keyfile_content"])
    keyfile.chmod(stat.S_IRUSR)
    cluster = Cluster(tmp_path / "cluster", 4, start=0, extra_args=("--keyFile", str(keyfile)))
    members, spare = cluster.names[:3], cluster.names[3]
    try:
        # Job 1's controller side, as ensure-ha.yml runs it while nothing answers: a CA, then the certificates of
        # the machines it provisions. (A run job would then provision this machine; the members below stand in.)
        first = tmp_path / "job1" / "inventory" / "stateserver-secrets"
        machines = [{"name": name, "mongo_address": address, "api_address": f"{host}:17070"}
                    for name, host, address in zip(members, cluster.hosts, cluster.addresses)]
        made = run_tasks(tmp_path / "job1", [{CERTS: {
            "secrets_dir": str(first), "machines": machines, "seeds": cluster.addresses, "tls": True,
            "tls_allow_invalid_certificates": True, "server_selection_timeout": 2}}])
        assert made.rc == 0 and made[0]["ca"]["action"] == "issued", made.stdout
        ca_file = str(tmp_path / "ca.crt")
        shutil.copy(first / "ca.crt", ca_file)

        # What the mongod role leaves on each machine: mongod.pem (certificate, then key) in mongod_tls_dir, 0400.
        host_vars = {}
        for name in members:
            tls_dir = tmp_path / "machines" / name / "tls"
            tls_dir.mkdir(parents=True)
            pem = tls_dir / "mongod.pem"
            pem.write_text((first / "certs" / f"{name}.crt").read_text().strip() + "\n"
                           + (first / "certs" / f"{name}.key").read_text().strip() + "\n")
            pem.chmod(stat.S_IRUSR)
            # And what the api_server role leaves there: its own certificate and key in <config_dir>/tls/.
            api_tls = tmp_path / "machines" / name / "api" / "tls"
            api_tls.mkdir(parents=True)
            for ext, host_file in (("crt", "server.crt"), ("key", "server.key")):
                shutil.copy(first / "certs" / "api" / f"{name}.{ext}", api_tls / host_file)
            # No sudo here: the test runs as the user that owns these files.
            host_vars[name] = {"mongod_tls_dir": str(tls_dir), "api_server_config_dir": str(api_tls.parent),
                               "ansible_become": False}
        # The spare's directories exist, empty: it holds nothing to adopt.
        host_vars[spare] = {"mongod_tls_dir": str(tmp_path / "machines" / spare / "tls"),
                            "api_server_config_dir": str(tmp_path / "machines" / spare / "api"), "ansible_become": False}
        (tmp_path / "machines" / spare / "api" / "tls").mkdir(parents=True)
        (tmp_path / "machines" / spare / "tls").mkdir()
        command_line = cluster.sim.command_line

        def with_tls(member):
            return [*command_line(member), "--tlsMode", "requireTLS", "--tlsCAFile", ca_file,
                    "--tlsCertificateKeyFile", str(tmp_path / "machines" / f"sm{member.index + 1}" / "tls" / "mongod.pem"),
                    "--tlsAllowConnectionsWithoutCertificates"]

        cluster.sim.command_line = with_tls
        for holder in (cluster.sim, *cluster.sim.members):
            holder.client_options = {"tls": True, "tlsCAFile": ca_file}
        for i in range(3):
            cluster.sim.start(i)
        config = {"_id": cluster.set_name, "version": 1, "settings": {"electionTimeoutMillis": 1000,
                                                                      "heartbeatIntervalMillis": 200},
                  "members": [{"_id": 0, "host": cluster.addresses[0],
                               "tags": {"stateserver-machine": cluster.names[0]}}]}
        with MongoClient(cluster.addresses[0], directConnection=True, tls=True, tlsCAFile=ca_file,
                         serverSelectionTimeoutMS=5000) as c:
            c.admin.command("replSetInitiate", config)
            cluster.wait_for(lambda: c.admin.command("hello").get("isWritablePrimary"), 30, "sm1 to become primary")
            c.admin.command("createUser", "admin", pwd=PASSWORD, roles=["root"])
        tls = {"tls": True, "tls_ca_file": ca_file}
        login = {"login_user": "admin", "login_password": "{% raw %}" + PASSWORD + "{% endraw %}", **tls}
        grown = run_tasks(tmp_path / "grow", [
            ea(cluster, 3, 3, **login), pg(cluster, **login),
            {"stateserver.ha.mongod_user": {"seeds": cluster.addresses, **login, "name": "stateserver-api",
                                            "password": CREDENTIAL["api_server_mongo_password"],
                                            "roles": [{"role": "readWrite", "db": "stateserver"},
                                                      {"role": "clusterMonitor", "db": "admin"}]},
             "no_log": True}])
        assert all(r.get("failed") is not True for r in grown.results), grown.stdout

        def observed():
            with MongoClient(cluster.addresses[:3], replicaSet=cluster.set_name, tls=True, tlsCAFile=ca_file,
                             username="admin", password=PASSWORD, serverSelectionTimeoutMS=10000) as c:
                config = c.admin.command("replSetGetConfig")["config"]
                records = list(c.get_database("stateserver").get_collection("machines").find())
            return config, records, [served_serial(address, ca_file) for address in cluster.addresses[:3]]

        before = observed()
        # Job 2: a new private data directory; the credential now carries job 1's CA.
        credential = {**CREDENTIAL, "stateserver_tls_ca_certificate": (first / "ca.crt").read_text(),
                      "stateserver_tls_ca_key": (first / "ca.key").read_text()}
        tasks = job(tmp_path, 2, cluster, {"n": "3", "down_after": 60}, credential, host_vars)
        assert tasks["__job__"]["rc"] == 0, tasks
        certificates = tasks["Keep the deployment CA and a certificate for each state machine"]
        assert certificates["ca"]["action"] == "given" and certificates["changed"] is False, certificates
        # The step after the plan (its result is the last one under this name): the planned machines only.
        assert sorted(tasks[PLAN]["machines"]) == members
        assert {name: (c["action"], c["api"]["action"]) for name, c in certificates["certificates"].items()} == {
            name: ("adopted", "adopted") for name in members}
        machines = tasks["__job__"]["machines"]
        for name in members:
            assert machines[name]["Read the certificate and key mongod serves"].get("censored")
            assert "Keep what the machine holds for the controller" in machines[name]
        # The spare was read once (holding nothing is no failure) and kept nothing; it was not pinged again.
        assert machines[spare]["Read the certificate and key mongod serves"].get("failed") is not True
        assert "Keep what the machine holds for the controller" not in machines[spare]
        assert "Read the certificate and key the API server serves" not in machines[spare]
        assert "Check that the host answers over its connection" not in machines[spare]
        plan = tasks[PLAN]
        assert not any(plan[key] for key in ("added", "promoted", "demoted", "removed", "repaired")), plan
        # The API server's user exists (made with the set above): nothing to do for it either.
        assert plan["api_user"]["actions"] == [] and plan["changed"] is False, plan
        assert tasks[CONVERGE]["steps"] == [] and sorted(tasks[CONVERGE]["voters"]) == members
        # No host changed, the controller included: nothing was issued, for the spare neither.
        assert tasks["__job__"]["changed"] == []
        # Only the given CA and the adopted certificates were stored (runner passes the inventory directory, so the
        # secrets directory is next to it), byte for byte the first job's files.
        stored = ["ca.crt", "ca.key"] + [f"certs/{sub}{name}.{ext}" for name in members for ext in ("crt", "key")
                                         for sub in ("", "api/")]
        assert tasks["__job__"]["secrets_written"] == sorted(
            ["stateserver-secrets", "stateserver-secrets/certs", "stateserver-secrets/certs/api"]
            + [f"stateserver-secrets/{f}" for f in stored])
        assert tasks["__job__"]["stored"] == {f: (first / f).read_text() for f in stored}
        assert not [f for f in tasks["__job__"]["secrets_written"] if spare in Path(f).name]
        # So the one PEM the mongod role makes of them (its __mongod_tls_pem_content) is the file each machine has.
        for name in members:
            made = "".join(tasks["__job__"]["stored"][f"certs/{name}.{ext}"].strip() + "\n" for ext in ("crt", "key"))
            assert made == (tmp_path / "machines" / name / "tls" / "mongod.pem").read_text()
        assert observed() == before

        # A retire check job: the spare the plan names for sm3's vote is reported as a real run would issue its
        # certificates (nothing made under --check), the machines that stay keep theirs (the retiree is not
        # provisioned, so it needs none); the spare's files are not written.
        tasks = job(tmp_path, 4, cluster, {"machine": "sm3"}, credential, host_vars, job_template="retire_machine")
        assert tasks["__job__"]["rc"] == 0, tasks
        certificates = tasks["Keep the deployment CA and a certificate for each state machine"]
        assert certificates["changed"] is True, certificates
        assert {name: (c["action"], c["api"]["action"]) for name, c in certificates["certificates"].items()} == {
            **{name: ("adopted", "adopted") for name in members[:2]}, spare: ("issued", "issued")}
        assert tasks["__job__"]["stored"] == {f: (first / f).read_text() for f in stored if "sm3" not in f}
        assert observed() == before

        # A credential without the CA (its optional inputs left empty): stopped before a CA is looked for or made,
        # as a first job would be (its CA would be deleted with the job's directory).
        tasks = job(tmp_path, 3, cluster, {"n": "3", "down_after": 60}, CREDENTIAL, host_vars)
        assert tasks["__job__"]["rc"] != 0
        assert tasks["Stop an AWX job whose credential does not carry the deployment CA"]["failed"] is True
        assert "Keep the deployment CA and a certificate for each state machine" not in tasks
        assert PLAN not in tasks and tasks["__job__"]["secrets_written"] == []
        assert observed() == before
    finally:
        cluster.stop()
