"""Run the collection's modules the way users do: through ansible-playbook, on localhost.

A test describes a few tasks; this writes them into a playbook, runs ansible-playbook on it (with a time bound),
and returns what each task registered, read from a JSON file the play writes last. Tasks never stop the play
(ignore_errors), so a test can assert on failures too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "build" / "collections"


@dataclass
class PlayRun:
    rc: int
    results: list[dict]
    stdout: str
    stderr: str

    def __getitem__(self, index: int) -> dict:
        return self.results[index]


def ansible_env(home: Path) -> dict:
    link = COLLECTIONS / "ansible_collections" / "stateserver" / "ha"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_tasks(workdir: Path, tasks: list[dict], *, check: bool = False, diff: bool = False,
              timeout: float = 240) -> PlayRun:
    """Run `tasks` (each {module_fqcn: args, optional keys}) in one play on localhost; return their results."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "results.json"
    if out.exists():
        out.unlink()
    play_tasks = []
    for i, task in enumerate(tasks):
        t = {"name": f"task {i}", "register": f"r{i}", "ignore_errors": True}
        t.update(task)
        play_tasks.append(t)
    dump = "{{ [" + ", ".join(f"r{i}" for i in range(len(tasks))) + "] | to_json }}"
    play_tasks.append({"name": "dump results", "ansible.builtin.copy": {"content": dump, "dest": str(out), "mode": "0600"},
                       "check_mode": False, "diff": False})
    playbook = [{
        "name": "integration",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": play_tasks,
    }]
    path = workdir / "playbook.yml"
    path.write_text(json.dumps(playbook, indent=1))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), str(path)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    proc = subprocess.run(cmd, check=False, env=ansible_env(workdir / "ansible-home"), capture_output=True, text=True,
                          timeout=timeout, cwd=str(workdir))
    results = json.loads(out.read_text()) if out.exists() else []
    return PlayRun(proc.returncode, results, proc.stdout, proc.stderr)


def run_recorded(workdir: Path, recorder: str, args: list[str], timeout: float = 300, env: dict | None = None,
                 ansible_playbook: Path | None = None) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ansible-playbook `args` in `workdir` with the `recorder` callback plugin enabled; return the process and
    the entries this run recorded ({host, task, result}, one per task result). env: the environment to run in
    (default: ansible_env with workdir/ansible-home), the callback's variables added; ansible_playbook: the one to
    run (default: this venv's)."""
    plugins = workdir / "callbacks"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "record.py").write_text(recorder)
    results = workdir / "results.jsonl"
    results.unlink(missing_ok=True)  # the recorder appends: an earlier run's entries are not this run's
    env = dict(env) if env is not None else ansible_env(workdir / "ansible-home")
    env.update(ANSIBLE_CALLBACK_PLUGINS=str(plugins), ANSIBLE_CALLBACKS_ENABLED="record", RECORD_RESULTS=str(results))
    proc = subprocess.run([str(ansible_playbook or Path(sys.executable).parent / "ansible-playbook"), *args],
                          check=False, env=env, capture_output=True, text=True, timeout=timeout, cwd=str(workdir))
    assert results.exists(), proc.stdout + proc.stderr
    return proc, [json.loads(line) for line in results.read_text().splitlines()]
