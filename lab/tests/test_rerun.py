"""A re-run of the state_machine role on a machine that matches skips both roles and changes nothing; a machine that
drifted (a hand-edited config file, a loosened secret file, a stopped service) is repaired, and --check reports the
repair without making it.

One lab host (systemd, SSH) on the bridge 10.178.11.0/24, which no other test or scenario uses; the simulator as
mongod, from wheels built into the test's state directory. TLS is on, as by default: mongod and the API server serve
the host's certificate from a CA made here, as ensure-ha.yml passes the deployment's. Needs root, like the lab.
Reads each run's results from ansible-runner's events, and the host's files and services over SSH.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import ansible_runner
import httpx
import pytest
import yaml
from mongosim.certs import make_ca

ROOT = Path(__file__).resolve().parents[2]
LABHOSTS = ROOT / "lab" / "labhosts.py"
PREFIX, SUBNET, HOST = "sslr", "10.178.11", "10.178.11.11"
CONFIG, TOKEN = "/etc/mongod.conf", "/etc/stateserver-api/token"
RECORD = "/var/lib/stateserver/state-machine.json"
PLAY = """\
- name: Make the host a state machine
  hosts: state_machines
  gather_facts: false
  tasks:
    - name: Apply the state machine role
      ansible.builtin.include_role:
        name: stateserver.ha.state_machine
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, mounts, bridges)")


def labhosts(state: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(LABHOSTS), *args, "--state", str(state)], check=True, timeout=900)


def ssh(state: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(state / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"root@{HOST}", command],
        text=True, capture_output=True, timeout=60, check=False)


def host_file(state: Path, path: str) -> tuple[str, str]:
    """(mode, SHA-256 of the content) of a file on the host."""
    out = ssh(state, f"stat -c %a {path} && sha256sum {path}")
    assert out.returncode == 0, out.stderr
    mode, digest = out.stdout.split()[:2]
    return mode, digest


def service_state(state: Path, name: str) -> str:
    return ssh(state, f"systemctl is-active {name}").stdout.strip()


def run(state: Path, *args: str, rc: int = 0) -> dict:
    """ansible-playbook through ansible-runner, which must exit with `rc`; {'changed': tasks changed, 'tasks': {task
    name: [events]}}."""
    play = state / "play.yml"
    play.write_text(PLAY)
    # ansible-runner keeps a run's command line in env/cmdline and reuses it for a later run given none: without
    # this, the fixture's -e mongod_bootstrap=true would follow every later run.
    shutil.rmtree(state / "runner" / "env", ignore_errors=True)
    (state / "runner").mkdir(exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(state / "runner"), playbook=str(play), inventory=str(state / "inventory.yml"),
        cmdline=" ".join(("-e", f"@{state / 'secrets.yml'}", *args)), quiet=True, rotate_artifacts=1,
        envvars={"PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                 "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "build" / "collections"),
                 "ANSIBLE_HOME": str(ROOT / "build" / "ansible-home"), "ANSIBLE_PIPELINING": "True",
                 "ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert runner.rc == rc, runner.stdout.read()[-4000:]
    tasks: dict[str, list[dict]] = {}
    for event in runner.events:
        if event["event"] in ("runner_on_ok", "runner_on_skipped", "runner_on_failed"):
            tasks.setdefault(event["event_data"]["task"], []).append(event)
    return {"changed": sum(runner.stats["changed"].values()), "tasks": tasks}


def write_secrets(state: Path) -> None:
    """The role never makes secrets nor certificates (ensure-ha.yml resolves them and passes them in): give it the
    deployment's, a CA and the host's certificate naming its address and 127.0.0.1 as deployment_certificates does."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    made = {name: "".join(secrets.choice(alphabet) for _ in range(length)) for name, length in
            (("mongod_keyfile_content", 756), ("mongod_admin_password", 32), ("state_machine_api_token", 40),
             ("state_machine_api_mongo_password", 32))}
    pki = state / "pki"
    ca = make_ca(pki)
    pem = Path(ca.issue("r1", [HOST, "127.0.0.1"], dns=("localhost",))).read_text()
    at = pem.index("-----BEGIN PRIVATE KEY-----")
    (pki / "r1.crt").write_text(pem[:at])
    (pki / "r1.key").write_text(pem[at:])
    (pki / "r1.key").chmod(0o600)
    made.update(mongod_tls_ca_file=ca.path, mongod_tls_certificate_file=str(pki / "r1.crt"),
                mongod_tls_key_file=str(pki / "r1.key"), api_server_tls_ca_src=ca.path,
                api_server_tls_certificate_src=str(pki / "r1.crt"), api_server_tls_key_src=str(pki / "r1.key"))
    path = state / "secrets.yml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(made))


def applied_in_full(result: dict) -> bool:
    return any(e["event"] != "runner_on_skipped" for e in result["tasks"]["Apply the roles in full"])


def why(result: dict) -> str:
    """What the play said differed (its "Say why" message), for an assertion's message."""
    return "; ".join(str(e["event_data"].get("res", {}).get("msg", "")) for e in
                     result["tasks"].get("Say why the roles are applied in full", [])
                     if e["event"] == "runner_on_ok")


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory):
    """One host, bootstrapped as a one-member set with its API server, then re-run once so its record is written."""
    state = tmp_path_factory.mktemp("rerun") / "state"
    labhosts(state, "up", f"--prefix={PREFIX}", f"--subnet={SUBNET}", "--count=1", "--name=r", "--wheels")
    try:
        write_secrets(state)
        run(state, "-e", "mongod_bootstrap=true")
        yield state
    finally:
        labhosts(state, "down")


def test_a_matching_machine_is_left_alone_in_one_comparison(machine: Path) -> None:
    run(machine)  # the bootstrap run applied the roles in full; this one matches or finishes the job
    result = run(machine)
    assert result["changed"] == 0
    assert not applied_in_full(result), why(result)
    assert service_state(machine, "mongod") == "active"
    assert service_state(machine, "stateserver-api") == "active"
    # HTTPS only, with the certificate the CA signed.
    trust = ssl.create_default_context(cafile=str(machine / "pki" / "ca.pem"))
    live = httpx.get(f"https://{HOST}:17070/v1/live", verify=trust, timeout=10)
    assert live.status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{HOST}:17070/v1/live", timeout=5)


def test_a_jump_of_two_member_authentication_steps_is_refused_before_anything_changes(machine: Path) -> None:
    # The comparison reads only mongod.conf's checksum; the full run it causes reads the mode the host runs with
    # (keyFile) and refuses x509, two steps away, before it writes or restarts anything.
    want_config = host_file(machine, CONFIG)
    started = ssh(machine, "systemctl show -p ActiveEnterTimestampMonotonic --value mongod").stdout
    refused = run(machine, "-e", "mongod_cluster_auth_mode=x509", rc=2)
    failures = [e["event_data"]["res"].get("msg", "") for events in refused["tasks"].values() for e in events
                if e["event"] == "runner_on_failed"]
    assert len(failures) == 1 and "runs with clusterAuthMode keyFile" in failures[0], failures
    assert refused["changed"] == 0
    assert host_file(machine, CONFIG) == want_config
    assert ssh(machine, "systemctl show -p ActiveEnterTimestampMonotonic --value mongod").stdout == started


def sandbox(state: Path, service: str) -> dict[str, str]:
    """What the kernel says of the service's running main process: its no_new_privs flag, its capability bounding
    set, and whether /usr, /etc and the data directory are read-only in its mount namespace."""
    script = (f"pid=$(systemctl show -p MainPID --value {service}); "
              "grep -E '^(NoNewPrivs|CapBnd):' /proc/$pid/status; "
              "for p in /usr /etc /var/lib/mongodb; do "
              "echo \"$p: $(nsenter -t $pid -m findmnt -n -o OPTIONS --target $p | cut -d, -f1)\"; done")
    out = ssh(state, script)
    assert out.returncode == 0, out.stderr
    pairs = (line.split(":", 1) for line in out.stdout.splitlines())
    return {key.strip(): value.strip() for key, value in pairs}


def test_both_services_run_sandboxed(machine: Path) -> None:
    # No new privileges and no capability at all, for mongod and the API server; the system is read-only for both,
    # and only mongod may write its data directory.
    mongod, api = sandbox(machine, "mongod"), sandbox(machine, "stateserver-api")
    for seen in (mongod, api):
        assert seen["NoNewPrivs"] == "1" and int(seen["CapBnd"], 16) == 0, seen
        assert seen["/usr"] == "ro" and seen["/etc"] == "ro", seen
    assert mongod["/var/lib/mongodb"] == "rw" and api["/var/lib/mongodb"] == "ro", (mongod, api)


def test_a_drifted_machine_is_repaired_and_check_mode_only_reports_it(machine: Path) -> None:
    want_config, want_token = host_file(machine, CONFIG), host_file(machine, TOKEN)
    assert want_token[0] == "400"
    # The install record goes too: the repair must write it again, or every later run would apply the roles in full.
    edit = ssh(machine, f"echo '# edited by hand' >> {CONFIG} && chmod 0644 {TOKEN} && systemctl stop stateserver-api"
                        f" && rm {RECORD}")
    assert edit.returncode == 0, edit.stderr

    checked = run(machine, "--check", "--diff")
    assert checked["changed"] > 0
    assert applied_in_full(checked)
    assert host_file(machine, CONFIG) != want_config  # check mode changed nothing
    assert host_file(machine, TOKEN)[0] == "644"
    assert service_state(machine, "stateserver-api") == "inactive"

    # Skipping a tag no task of the roles carries (molecule skips "notest") still applies them in full, so the run
    # records its inputs.
    repaired = run(machine, "--skip-tags", "notest")
    assert repaired["changed"] > 0
    assert host_file(machine, CONFIG) == want_config
    assert host_file(machine, TOKEN) == want_token
    assert service_state(machine, "stateserver-api") == "active"
    assert service_state(machine, "mongod") == "active"

    again = run(machine)
    assert again["changed"] == 0
    assert not applied_in_full(again), why(again)
