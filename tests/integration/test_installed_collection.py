"""The collection as users get it (issue 15): built by ansible-galaxy, installed into a fresh collections path, run
from a directory outside the checkout with nothing of the checkout on Ansible's paths.

Every module's documentation loads from the installed collection; the API server's wheels are built from the
installed collection's own apiserver/ source by stateserver.ha.api_wheels with pip --no-index from a local
wheelhouse (build/wheelhouse, `make tools`), as an air-gapped site does, and they are all the API server needs;
the execution-environment definition is one ansible-builder accepts and it builds the wheels the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from playbook import REPO, run_recorded
from test_retire_playbooks import RECORDER

pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent
WHEELHOUSE = REPO / "build" / "wheelhouse"


def env_for(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(root / "collections"), ANSIBLE_HOME=str(root / "home"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return env


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A directory with the built tarball installed under collections/ (and nothing else of the checkout)."""
    root = tmp_path_factory.mktemp("installed")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(root / "dist"),
                    str(REPO)], check=True, capture_output=True, timeout=120, env=env_for(root))
    (tarball,) = (root / "dist").glob("stateserver-ha-*.tar.gz")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p",
                    str(root / "collections"), str(tarball)], check=True, capture_output=True, timeout=120,
                   cwd=str(root), env=env_for(root))
    return root


def installed(root: Path) -> Path:
    return root / "collections" / "ansible_collections" / "stateserver" / "ha"


def api_wheels(root: Path, workdir: Path, *extra: str) -> tuple[int, list[dict]]:
    """(rc, every task result) of stateserver.ha.api_wheels run by its collection name from workdir."""
    workdir.mkdir(parents=True)
    proc, entries = run_recorded(workdir, RECORDER, ["stateserver.ha.api_wheels", *extra], env=env_for(root),
                                 ansible_playbook=BIN / "ansible-playbook")
    return proc.returncode, entries


def task(entry: dict) -> str:
    return entry["task"].split(" : ")[-1]  # without the role's name


def changed(entries: list[dict]) -> list[str]:
    return [task(e) for e in entries if e["result"].get("changed")]


def test_every_module_is_documented_from_the_installed_collection(root):
    modules = sorted(p.stem for p in (installed(root) / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert "ensure_availability" in modules and "peergroup" in modules
    names = [f"stateserver.ha.{m}" for m in modules]
    proc = subprocess.run([str(BIN / "ansible-doc"), "--json", "-t", "module", *names], check=False,
                          capture_output=True, text=True, timeout=120, cwd=str(root), env=env_for(root))
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert sorted(docs) == names
    assert all(d["doc"]["short_description"] and d["return"] is not None for d in docs.values())


def test_every_playbook_of_the_installed_collection_passes_syntax_check(root):
    # By collection name, as users call them; awx_configure.yml needs awx.awx, which test_awx_definitions.py adds.
    names = sorted(f"stateserver.ha.{p.stem}" for p in (installed(root) / "playbooks").glob("*.yml")
                   if "-" not in p.stem and p.stem != "awx_configure")
    assert {"stateserver.ha.ensure_ha", "stateserver.ha.retire_machine", "stateserver.ha.api_wheels"} <= set(names)
    proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", *names], check=False,
                          capture_output=True, text=True, timeout=120, cwd=str(root), env=env_for(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_api_servers_wheels_are_built_offline_from_the_installed_collection(root):
    assert (WHEELHOUSE / ".complete").exists(), "no local wheelhouse: run `make tools` (scripts/fetch-wheelhouse)"
    wheels = root / "wheels"
    offline = ("-e", f"api_server_wheel_dir={wheels}", "-e", f"api_server_wheel_find_links={WHEELHOUSE}")

    # --check builds nothing and creates nothing.
    rc, entries = api_wheels(root, root / "check", *offline, "--check")
    assert rc == 0 and not wheels.exists()
    assert "Say that the wheels would be built" in changed(entries)

    # A build that fails half-way (a wheelhouse without setuptools to build with) is finished by the next run.
    empty = root / "empty-wheelhouse"
    empty.mkdir()
    rc, entries = api_wheels(root, root / "failed", "-e", f"api_server_wheel_dir={wheels}",
                             "-e", f"api_server_wheel_find_links={empty}")
    assert rc != 0 and [task(e) for e in entries if e["result"].get("failed")] == ["Build the wheel"]

    rc, entries = api_wheels(root, root / "build", *offline)
    assert rc == 0, [e for e in entries if e["result"].get("failed")]
    (own,) = wheels.glob("stateserver_apiserver-*.whl")
    source = installed(root) / "apiserver" / "stateserver_api" / "main.py"
    with zipfile.ZipFile(own) as wheel:
        assert wheel.read("stateserver_api/main.py") == source.read_bytes()
    # pip built a copy: the installed collection is as it was installed.
    assert sorted(p.name for p in source.parents[1].iterdir()) == [
        "README.md", "pyproject.toml", "stateserver_api", "stateserver_client"]
    # What the api_server role runs on a host (pip --no-index --find-links <wheels>) finds everything it needs.
    report = root / "install-report.json"
    proc = subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--dry-run", "--ignore-installed",
                           "--no-index", "--find-links", str(wheels), "--report", str(report), "--quiet",
                           "stateserver-apiserver"], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    install = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower() for item in install}
    assert {"stateserver-apiserver", "fastapi", "uvicorn", "pymongo", "httpx", "cryptography"} <= names
    assert all(Path(item["download_info"]["url"].removeprefix("file://")).parent == wheels for item in install)

    # The same collection again: nothing is rebuilt, so the hosts would receive the same bytes.
    digest = hashlib.sha256(own.read_bytes()).hexdigest()
    rc, entries = api_wheels(root, root / "again", *offline)
    assert rc == 0 and changed(entries) == []
    assert hashlib.sha256(own.read_bytes()).hexdigest() == digest

    # A directory that holds something else is refused, and left as it was.
    other = root / "not-wheels"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc, entries = api_wheels(root, root / "refused", "-e", f"api_server_wheel_dir={other}",
                             "-e", f"api_server_wheel_find_links={WHEELHOUSE}")
    assert rc != 0
    failed = [e for e in entries if e["result"].get("failed")]
    assert [task(e) for e in failed] == ["Check the wheel build's inputs"]
    assert str(other) in failed[0]["result"]["msg"]
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_the_execution_environment_definition_builds_the_wheels_from_the_installed_collection(root):
    context = root / "ee-context"
    proc = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(installed(root) / "execution-environment.yml"),
                           "-c", str(context)], check=False, capture_output=True, text=True, timeout=120,
                          cwd=str(root))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (containerfile,) = [p for p in (context / "Containerfile", context / "Dockerfile") if p.exists()]
    final = containerfile.read_text().split("AS final", 1)[1]
    assert "ansible-playbook stateserver.ha.api_wheels -e api_server_wheel_dir=$STATESERVER_HA_API_WHEEL_DIR" in final
    assert "ENV STATESERVER_HA_API_WHEEL_DIR=/opt/stateserver-ha/api-wheels" in final
    # The wheels are built before the image drops to its unprivileged user.
    assert final.index("stateserver.ha.api_wheels") < final.index("USER 1000")
    requirements = (context / "_build" / "requirements.yml").read_text()
    assert "stateserver.ha" in requirements


@pytest.mark.parametrize("role", ["api_server", "unit"])
def test_the_roles_take_the_execution_environments_wheel_directory(root, tmp_path, role):
    # The EE built from execution-environment.yml sets STATESERVER_HA_API_WHEEL_DIR; the roles' wheel directory
    # defaults to it, so job templates need no variable for it.
    variable = f"{role}_wheel_dir"
    (tmp_path / "play.yml").write_text(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: stateserver.ha.{role}
      when: false  # only the role's defaults are wanted: an imported role's defaults are the play's
    - ansible.builtin.debug:
        var: {variable}
""")
    for value in ("/opt/stateserver-ha/api-wheels", None):
        env = {k: v for k, v in env_for(root).items() if k != "STATESERVER_HA_API_WHEEL_DIR"}
        env.update({"STATESERVER_HA_API_WHEEL_DIR": value} if value else {})
        proc, entries = run_recorded(tmp_path, RECORDER, [str(tmp_path / "play.yml")], timeout=120, env=env,
                                     ansible_playbook=BIN / "ansible-playbook")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (shown,) = [e["result"][variable] for e in entries if variable in e["result"]]
        assert shown == (value or "")
