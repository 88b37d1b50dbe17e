"""The api_server role's templates, rendered by ansible with the role's defaults, give a config the server accepts
and a systemd unit whose command line runs it; the secrets are referenced by path, never written into either."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mongosim.certs import make_ca
from stateserver_api.main import load_settings
from stateserver_client.client import ClientConfig

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "api_server"
ANSIBLE = Path(sys.executable).parent / "ansible-playbook"

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not shutil.which(str(ANSIBLE)), reason="needs ansible-playbook in the venv")]


def run_playbook(tmp_path: Path, plays: list[dict], extra: dict | None = None) -> subprocess.CompletedProcess:
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps(plays))
    (tmp_path / "extra.json").write_text(json.dumps(extra or {}))
    # A temporary directory of this test's own: molecule scenarios beside it make scratch directories in /tmp too.
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"),
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default"}
    return subprocess.run([str(ANSIBLE), "-i", "localhost,", "-e", f"@{tmp_path / 'extra.json'}", str(playbook)],
                          capture_output=True, text=True, env=env, timeout=100, check=False)


def tls_tasks() -> list[dict]:
    """The role's own tasks that write the TLS files (tasks/configure.yml), without their handlers."""
    configure = yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())
    tasks = [dict(t) for t in configure if "tls" in str(t.get("when", "")) and "copy" in str(t) + str(t.get("name"))
             or "TLS directory" in t["name"]]
    for task in tasks:
        task.pop("notify", None)
    return tasks


def render(tmp_path: Path, host: str, **role_vars: object) -> subprocess.CompletedProcess:
    """Render the role's config and unit with its defaults, the secret files in tmp_path as the role writes them,
    and the TLS files written by the role's own tasks (as root: the service account is not made here)."""
    (tmp_path / "token").write_text("never-in-a-template-0123\n")
    (tmp_path / "mongo-password").write_text("never-in-a-template-pw\n")
    return run_playbook(tmp_path, [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {"ansible_python_interpreter": sys.executable, "ansible_host": host,
                 "api_server_token": "never-in-a-template-0123", "api_server_mongo_password": "never-in-a-template-pw",
                 "out": str(tmp_path)},
        "tasks": [
            *tls_tasks(),
            {"name": "Render the config", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "api.json.j2"), "dest": "{{ out }}/api.json", "mode": "0600"}},
            {"name": "Render the unit", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "stateserver-api.service.j2"), "dest": "{{ out }}/unit",
                "mode": "0600"}},
        ],
    }], extra={"api_server_config_dir": str(tmp_path), "api_server_user": "root", "api_server_group": "root",
               **role_vars})  # over the role defaults read as vars_files


def check_config(config: Path) -> subprocess.CompletedProcess:
    """The role's validate step for api.json (tasks/configure.yml)."""
    return subprocess.run([str(ANSIBLE.parent / "stateserver-api"), "--config", str(config), "--check-config"],
                          capture_output=True, text=True, timeout=60, check=False)


PLAIN = {"api_server_tls": False, "api_server_mongo_tls": False}


def test_role_templates_render_a_config_the_server_accepts(tmp_path: Path) -> None:
    run = render(tmp_path, "10.177.0.11", **PLAIN)
    assert run.returncode == 0, run.stdout + run.stderr
    config = json.loads((tmp_path / "api.json").read_text())
    settings = load_settings(["--config", str(tmp_path / "api.json")])
    assert (settings.host, settings.port) == ("10.177.0.11", 17070)
    assert settings.mongo_seeds == ["10.177.0.11:37017"]
    assert settings.token_file == str(tmp_path / "token")
    assert settings.mongo_password_file == str(tmp_path / "mongo-password")
    assert not settings.tls and not settings.mongo_tls_ca_file and not (tmp_path / "tls").exists()
    unit = (tmp_path / "unit").read_text()
    command = f"/opt/stateserver-api/bin/stateserver-api --config {tmp_path}/api.json"
    assert f"ExecStart={command}\n" in unit
    assert f"ExecStartPost={command} --wait-live 30\n" in unit  # a restart ends when the server answers
    assert "LimitNOFILE=16384\n" in unit and "TasksMax=256\n" in unit and "MemoryMax=512M\n" in unit
    assert "User=root\n" in unit  # the service account as given (root here: no account is made by this render)
    for rendered in (json.dumps(config), unit):
        assert "never-in-a-template" not in rendered

    # The role's validate step accepts this config, and refuses it with any spelling of the wildcard address.
    configure = yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())
    template = next(t["ansible.builtin.template"] for t in configure if "ansible.builtin.template" in t)
    assert template["validate"].endswith("/bin/stateserver-api --config %s --check-config")
    assert check_config(tmp_path / "api.json").returncode == 0
    for host in ("0", "0x0", "::0", "0:0:0:0:0:0:0:0"):
        (tmp_path / "api.json").write_text(json.dumps({**config, "host": host}))
        check = check_config(tmp_path / "api.json")
        assert check.returncode == 2 and "wildcard address" in check.stderr, host


def controller_files(tmp_path: Path, ip: str) -> dict[str, str]:
    """The deployment CA and a machine's certificate and key as separate controller files, as
    stateserver.ha.deployment_certificates keeps them."""
    ca = make_ca(tmp_path / "controller")
    pem = Path(ca.issue("sm1", [ip])).read_text()
    at = pem.index("-----BEGIN PRIVATE KEY-----")
    (tmp_path / "controller" / "sm1.crt").write_text(pem[:at])
    (tmp_path / "controller" / "sm1.key").write_text(pem[at:])
    return {"api_server_tls_ca_src": ca.path, "api_server_tls_certificate_src": str(tmp_path / "controller" / "sm1.crt"),
            "api_server_tls_key_src": str(tmp_path / "controller" / "sm1.key")}


def test_role_with_tls_on_installs_the_certificates_and_gives_a_config_the_server_accepts(tmp_path: Path) -> None:
    sources = controller_files(tmp_path, "10.177.0.11")
    run = render(tmp_path, "10.177.0.11", **sources)  # api_server_tls and api_server_mongo_tls by default
    assert run.returncode == 0, run.stdout + run.stderr
    tls = tmp_path / "tls"
    settings = load_settings(["--config", str(tmp_path / "api.json")])
    assert (settings.tls, settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file) == (
        True, str(tls / "server.crt"), str(tls / "server.key"), str(tls / "ca.crt"))
    assert settings.mongo_tls_ca_file == str(tls / "ca.crt")  # mongod is reached over TLS with the deployment CA
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in tls.iterdir()} == {
        "ca.crt": "0o444", "server.crt": "0o444", "server.key": "0o400"}
    assert (tls / "server.key").read_text().strip() == Path(sources["api_server_tls_key_src"]).read_text().strip()
    assert "PRIVATE KEY" not in run.stdout  # no_log on the key
    assert check_config(tmp_path / "api.json").returncode == 0
    (tls / "server.key").chmod(0o640)  # a key the group can read: the validate step refuses the config
    refused = check_config(tmp_path / "api.json")
    assert refused.returncode == 1 and "open to group or others" in refused.stderr

    # A renewed certificate or key reloads the server (SIGHUP, one machine at a time); the CA restarts it.
    unit = (tmp_path / "unit").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in unit
    handlers = {h["name"]: h for h in yaml.safe_load((ROLE / "handlers" / "main.yml").read_text())}
    reload = handlers["Reload the API server's certificate"]
    assert reload["ansible.builtin.systemd_service"]["state"] == "reloaded" and reload["throttle"] == 1
    notify = {t["name"]: t.get("notify") for t in yaml.safe_load((ROLE / "tasks" / "configure.yml").read_text())}
    assert notify["Write the API server's certificate"] == notify["Write the API server's private key, readable by " \
                                                                  "the service user only"] == reload["name"]
    assert notify["Write the deployment CA"] == "Restart the API server"


def test_role_with_tls_on_and_no_certificates_stops_naming_the_variables(tmp_path: Path) -> None:
    sources = controller_files(tmp_path, "10.177.0.11")
    cases = [{}, {"api_server_tls": False}, {**sources, "api_server_tls_key_src": "/nonexistent.key"}, sources, PLAIN]
    blocks = [{"vars": given, "block": [
                  {"name": "Check", "ansible.builtin.include_tasks": str(ROLE / "tasks" / "preflight.yml")},
                  {"name": "Passed", "ansible.builtin.debug": {"msg": f"CASE {i} PASSED"}}],
               "rescue": [{"name": "Failed", "ansible.builtin.debug": {
                   "msg": f"CASE {i} FAILED: {{{{ ansible_failed_result.msg }}}}"}}]}
              for i, given in enumerate(cases)]
    run = run_playbook(tmp_path, [{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {"ansible_python_interpreter": sys.executable, "ansible_host": "10.177.0.11"},
        "tasks": blocks}], extra={"api_server_wheel_dir": str(tmp_path), "api_server_token": "t" * 20,
                                  "api_server_mongo_password": "p" * 20})  # over the defaults; each case over these
    assert run.returncode == 0, run.stdout + run.stderr
    outcome = dict(re.findall(r'"msg": "CASE (\d) ([^"]*)"', run.stdout))
    assert sorted(outcome) == ["0", "1", "2", "3", "4"], run.stdout
    names = "api_server_tls_certificate_src, api_server_tls_key_src and api_server_tls_ca_src"
    assert outcome["0"].startswith("FAILED: api_server_tls is true") and names in outcome["0"]
    # HTTPS off, TLS to mongod still on (mongod_tls): the CA alone is asked for.
    assert outcome["1"].startswith("FAILED: api_server_mongo_tls is true") and "api_server_tls_ca_src" in outcome["1"]
    assert outcome["2"].startswith("FAILED:") and "/nonexistent.key" in outcome["2"]
    assert outcome["3"] == outcome["4"] == "PASSED"


UNIT = ROOT / "roles" / "unit"


def test_unit_role_copies_the_deployment_ca_and_the_client_verifies_with_it(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "controller")
    configure = yaml.safe_load((UNIT / "tasks" / "configure.yml").read_text())
    preflight = next(t for t in yaml.safe_load((UNIT / "tasks" / "main.yml").read_text())
                     if "HTTPS" in t["name"])
    tasks = [preflight, *(t for t in configure if "CA" in t["name"] or "ansible.builtin.template" in t)]
    for task in tasks:  # run outside the role: its template by full path
        if "ansible.builtin.template" in task:
            task["ansible.builtin.template"]["src"] = str(UNIT / "templates" / task["ansible.builtin.template"]["src"])
    base = {"unit_config_dir": str(tmp_path / "etc"), "unit_group": "root", "unit_token": "t" * 20,
            "unit_api_addresses": ["10.177.0.11:17070"]}
    runs = {}
    for case, given in {"tls": {"unit_api_tls_ca_src": ca.path}, "no-ca": {}, "plain": {"unit_api_tls": False}}.items():
        (tmp_path / case).mkdir()
        runs[case] = run_playbook(tmp_path / case, [{
            "hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars_files": [str(UNIT / "defaults" / "main.yml")],
            "vars": {"ansible_python_interpreter": sys.executable},
            "tasks": [{"name": "Config dir", "ansible.builtin.file": {
                "path": "{{ unit_config_dir }}", "state": "directory", "mode": "0750"}}, *tasks]}],
            extra={**base, "unit_config_dir": str(tmp_path / case / "etc"), **given})
    assert runs["tls"].returncode == 0, runs["tls"].stdout
    config = ClientConfig.load(tmp_path / "tls" / "etc" / "config.json")
    assert config.ca_file == str(tmp_path / "tls" / "etc" / "ca.crt") and not config.insecure_http
    assert Path(config.ca_file).read_text() == Path(ca.path).read_text()
    assert oct(Path(config.ca_file).stat().st_mode & 0o777) == "0o444"
    # TLS is the default: without the CA the role stops, naming the variable, before writing anything.
    assert runs["no-ca"].returncode != 0 and "unit_api_tls_ca_src must name the deployment CA" in runs["no-ca"].stdout
    assert not (tmp_path / "no-ca" / "etc" / "config.json").exists()
    plain = ClientConfig.load(tmp_path / "plain" / "etc" / "config.json")
    assert plain.insecure_http and plain.ca_file is None


def wheels_play(tmp_path: Path, wheels: Path, check: bool = False) -> list[dict]:
    return [{"hosts": "localhost", "connection": "local", "gather_facts": False, "check_mode": check,
             "vars": {"ansible_python_interpreter": sys.executable},
             "tasks": [{"name": "Send the wheels", "ansible.builtin.include_role": {
                 "name": "api_server", "tasks_from": "wheels.yml"},
                 "vars": {"__api_server_wheels_src": str(wheels), "__api_server_wheels_dest": str(tmp_path / "dest")}},
                 {"name": "Report", "ansible.builtin.debug": {
                     "msg": "WHEELS-CHANGED={{ __api_server_wheels is changed }} SCRATCH={{ __api_server_scratch.path }}"}}]}]


@pytest.mark.timeout(400)  # four ansible-playbook runs; each takes half a minute on a busy 2-core machine
def test_wheels_travel_as_one_archive_and_only_when_they_changed(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "a-1.0-py3-none-any.whl").write_bytes(b"wheel a1")
    (wheels / "b-1.0-py3-none-any.whl").write_bytes(b"wheel b1")

    def send(check: bool = False) -> bool:
        run = run_playbook(tmp_path, wheels_play(tmp_path, wheels, check))
        assert run.returncode == 0, run.stdout + run.stderr
        changed = "WHEELS-CHANGED=True" in run.stdout
        # The scratch directory was this test's own, so the check below that it is gone means something.
        assert f"SCRATCH={tmp_path / 'tmp'}/ansible." in run.stdout, run.stdout
        # Nothing else reports a change (the controller's scratch archive is not one): molecule's idempotence step.
        assert re.search(r"localhost\s*: ok=\d+\s+changed=0\s", run.stdout) or changed, run.stdout
        return changed

    assert send() is True
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["a-1.0-py3-none-any.whl", "b-1.0-py3-none-any.whl"]
    archive = (tmp_path / "dest.tar").stat()
    for wheel in wheels.iterdir():  # the same wheels rebuilt later: new times, same bytes
        os.utime(wheel, (1e9, 1e9))
    assert send() is False  # a re-run sends nothing
    assert (tmp_path / "dest.tar").stat().st_mtime == archive.st_mtime
    (wheels / "a-1.0-py3-none-any.whl").unlink()
    (wheels / "a-1.1-py3-none-any.whl").write_bytes(b"wheel a2")
    assert send(check=True) is True  # --check tells the truth and changes nothing
    assert (tmp_path / "dest" / "a-1.0-py3-none-any.whl").exists()
    assert send() is True
    # The older build's wheel is gone, so pip cannot pick it up.
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["a-1.1-py3-none-any.whl", "b-1.0-py3-none-any.whl"]
    assert not list((tmp_path / "tmp").glob("ansible.*stateserver-wheels"))  # scratch removed
