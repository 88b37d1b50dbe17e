"""Run a playbook of the AWX project against a scenario's lab hosts the way an AWX job template runs it.

What AWX does for a job (shared/research/awx-jobs.md §1-3), done here without an AWX server:
- a new private data directory per job (mkdtemp, 0700): project/ is a copy of extensions/awx/project,
  requirements_collections/ a copy of the collection as `ansible-galaxy collection install` put it from the built
  tarball (AWX's project sync), inventory/hosts an executable script that prints the inventory as JSON;
- the survey answers checked against the shipped survey as AWX checks a launch, and written with AWX's meta variables
  to env/extravars, every string tagged !unsafe;
- the credential rendered from the shipped credential type's extra_vars injectors into a 0400 file passed with
  -e @file in env/cmdline, after -u <machine credential user>; the machine credential's key goes to ssh-agent
  through ansible-runner (env/ssh_key), never into the inventory;
- ansible-runner started in a process that has only the variables AWX gives a job (an execution environment
  starts from an empty environment), so nothing of the checkout or of molecule's Ansible configuration leaks in.
The results are ansible-runner's job events; the directory is deleted afterwards, as AWX deletes it.

tests/integration/test_awx_jobs.py runs check jobs on loopback with the checkout linked as the collection. This
module stays separate rather than shared with it: the two differ in everything but the survey check and the
injector rendering (a dozen lines), and sharing them would make the integration tests import from molecule/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "extensions" / "awx"
BIN = Path(sys.executable).parent
JOB_TIMEOUT = 900
RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable")


class UnsafeDumper(yaml.SafeDumper):
    """Strings written as AWX writes extra vars: tagged !unsafe, so Ansible never templates an answer or a secret."""


UnsafeDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar("!unsafe", value))


def clean_env(home: Path) -> dict[str, str]:
    """The base environment of a job's process: the venv's tools and a locale, nothing of the caller's Ansible."""
    return {"PATH": f"{BIN}{os.pathsep}/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def install_collection(workdir: Path) -> Path:
    """Build the collection's tarball from the checkout once and install it as AWX's project sync installs
    requirements; returns that requirements_collections directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = clean_env(workdir / "home")
    galaxy = str(BIN / "ansible-galaxy")
    for cmd in ([galaxy, "collection", "build", "--force", "--output-path", str(workdir / "dist"), str(ROOT)],
                [galaxy, "collection", "install", "--offline", "-p",
                 str(workdir / "requirements_collections")]):
        if cmd[2] == "install":
            (tarball,) = (workdir / "dist").glob("stateserver-ha-*.tar.gz")
            cmd.append(str(tarball))
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180, cwd=str(workdir),
                              env=env)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: "
                                 f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return workdir / "requirements_collections"


def survey_answers(answers: dict[str, Any], survey: str = "survey_ensure_ha.yml") -> dict[str, Any]:
    """The extra vars AWX makes of a launch's answers: each checked as AWX checks it, the defaults for the rest."""
    spec = yaml.safe_load((AWX / survey).read_text())["spec"]
    out: dict[str, Any] = {}
    for question in spec:
        value = answers.get(question["variable"], question.get("default"))
        if question["type"] == "multiplechoice":  # one of the choices, which are text: "5", never 5
            assert isinstance(value, str) and value in question["choices"], (question["variable"], value)
        if question["type"] == "integer":  # a JSON integer: AWX refuses "60" and true
            assert isinstance(value, int) and not isinstance(value, bool), (question["variable"], value)
            assert question["min"] <= value <= question["max"], (question["variable"], value)
        out[question["variable"]] = value
    assert set(answers) <= set(out), "AWX drops extra vars that are not survey questions"
    return out


def credential_extra_vars(inputs: dict[str, str]) -> dict[str, str]:
    """The shipped credential type's extra_vars injectors rendered with a credential's inputs, as AWX renders them
    (a sandbox; an input left empty renders as empty text)."""
    injectors = yaml.safe_load((AWX / "credential_type.yml").read_text())["injectors"]["extra_vars"]
    sandbox = ImmutableSandboxedEnvironment()
    return {name: sandbox.from_string(template).render(**inputs) for name, template in injectors.items()}


@dataclass
class Job:
    """What a finished job left: ansible-runner's rc and status, and its events in order."""

    rc: int
    status: str
    events: list[dict[str, Any]]
    stdout: str

    def results(self, host: str | None = None) -> list[dict[str, Any]]:
        """event_data of every task result (ok, failed, unreachable), of one host if given."""
        return [{**e["event_data"], "event": e["event"]} for e in self.events if e["event"] in RESULT_EVENTS
                and (host is None or e["event_data"].get("host") == host)]

    def failed(self) -> list[tuple[str, str]]:
        return [(d["host"], d["task"]) for d in self.results()
                if d["event"] != "runner_on_ok" and not d.get("ignore_errors")]

    def changed(self) -> list[tuple[str, str]]:
        """(host, task) of every result that reported a change."""
        return [(d["host"], d["task"]) for d in self.results() if d.get("res", {}).get("changed")]

    def result(self, task: str, host: str = "localhost") -> dict[str, Any] | None:
        """The last result of that task on that host, with "failed" set when it failed; None if it never ran."""
        found = None
        for data in self.results(host):
            if data.get("task") == task:
                found = {**data.get("res", {}), "failed": data["event"] != "runner_on_ok"}
        return found


def run_job(workdir: Path, number: int, *, collections: Path, inventory: dict[str, Any], answers: dict[str, Any],
            credential: dict[str, str] | None, ssh_user: str, ssh_key: str, envvars: dict[str, str] | None = None,
            playbook: str = "ensure_ha.yml", survey: str = "survey_ensure_ha.yml") -> Job:
    """One job in a new private data directory under workdir; the directory is deleted when it ends.

    inventory: the JSON an inventory script prints (AWX's inventory/hosts); credential: the inputs of a credential
    of the shipped type, or None for a job template without one; envvars: what the job template's environment
    adds (AWX_TASK_ENV)."""
    pdd = Path(tempfile.mkdtemp(prefix=f"awx_{number}_", dir=workdir))
    try:
        shutil.copytree(AWX / "project", pdd / "project", ignore=shutil.ignore_patterns(".git"))
        shutil.copytree(collections, pdd / "requirements_collections")
        (pdd / "inventory").mkdir()
        script = pdd / "inventory" / "hosts"
        script.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(inventory))})\n")
        script.chmod(0o700)
        env_dir = pdd / "env"
        env_dir.mkdir()
        extravars = {**survey_answers(answers, survey), "awx_job_id": number, "tower_job_id": number,
                     "awx_job_launch_type": "manual", "awx_job_template_name": f"stateserver.ha {Path(playbook).stem}"}
        (env_dir / "extravars").write_text(yaml.dump(extravars, Dumper=UnsafeDumper))
        cmdline = ["-u", ssh_user]
        if credential is not None:
            fd, name = tempfile.mkstemp(dir=env_dir)
            with os.fdopen(fd, "w") as injected:
                injected.write(yaml.dump(credential_extra_vars(credential), Dumper=UnsafeDumper))
            os.chmod(name, 0o400)
            cmdline += ["-e", f"@{name}"]
        (env_dir / "cmdline").write_text(" ".join(cmdline))
        (env_dir / "ssh_key").write_text(ssh_key)
        (env_dir / "ssh_key").chmod(0o600)
        env = clean_env(pdd / "home")
        env.update(ANSIBLE_COLLECTIONS_PATH=str(pdd / "requirements_collections"), ANSIBLE_HOST_KEY_CHECKING="False",
                   ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_PARAMIKO_RECORD_HOST_KEYS="False",
                   ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_SSH_CONTROL_PATH_DIR=str(pdd / "cp"),
                   ANSIBLE_FORCE_COLOR="False", AWX_PRIVATE_DATA_DIR=str(pdd), JOB_ID=str(number),
                   **(envvars or {}))
        # Its own session, so that a job past its time is stopped with every ansible process it started.
        proc = subprocess.Popen([str(BIN / "ansible-runner"), "run", str(pdd), "-p", playbook, "--ident", str(number)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        try:
            stdout = proc.communicate(timeout=JOB_TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout = proc.communicate()[0]
            raise AssertionError(f"job {number} still ran after {JOB_TIMEOUT}s: {stdout[-4000:]}") from None
        artifacts = pdd / "artifacts" / str(number)
        if not (artifacts / "rc").exists():
            raise AssertionError(f"ansible-runner exited {proc.returncode} without running job {number}: "
                                 f"{stdout[-4000:]}")
        events = [json.loads(p.read_text()) for p in (artifacts / "job_events").glob("*.json")]
        events.sort(key=lambda e: e["counter"])
        return Job(rc=int((artifacts / "rc").read_text()), status=(artifacts / "status").read_text().strip(),
                   events=events, stdout=stdout)
    finally:
        shutil.rmtree(pdd, ignore_errors=True)
