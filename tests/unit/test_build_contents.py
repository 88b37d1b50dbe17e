"""What `ansible-galaxy collection build` puts in the tarball (issue 15): what users need, and nothing else.

The collection root is built into a temporary directory with galaxy.yml's build_ignore, and the tarball's names are
checked against the working tree: every module, role spec, playbook and alert file is there, and so is the API
server's source (the api_server role installs wheels the operator builds from it); tests, the lab, scripts,
molecule scenarios, virtualenvs, build output, caches and changelog fragments are not.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GALAXY = Path(sys.executable).with_name("ansible-galaxy")

REQUIRED_GLOBS = ("plugins/modules/*.py", "plugins/module_utils/*.py", "plugins/doc_fragments/*.py",
                  "roles/*/meta/argument_specs.yml", "roles/*/tasks/*.yml", "playbooks/*.yml",
                  "files/prometheus/*", "apiserver/stateserver_api/*.py", "apiserver/stateserver_api/collection/*.py",
                  "apiserver/stateserver_client/*.py", "extensions/awx/*.yml", "extensions/awx/project/*.yml",
                  "extensions/awx/project/collections/*.yml")
REQUIRED_FILES = ("README.md", "COPYING", "meta/runtime.yml", "meta/execution-environment.yml", "execution-environment.yml",
                  "changelogs/changelog.yaml", "apiserver/pyproject.toml", "apiserver/README.md")
# Top-level paths and path parts that are development or test material, or generated.
FORBIDDEN_TOP = ("tests", "lab", "scripts", "molecule", ".venv", "build", "dist", ".ci", "requirements", "Makefile",
                 "ruff.toml", ".ansible-lint", ".gitignore", "apiserver/tests", "apiserver/build",
                 "apiserver/bench.py", "apiserver/vendor.py", "changelogs/fragments", "changelogs/.plugin-cache.yaml")
FORBIDDEN_PARTS = ("__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache")


@pytest.fixture(scope="module")
def names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("build")
    subprocess.run([str(GALAXY), "collection", "build", "--output-path", str(out), str(ROOT)], check=True,
                   capture_output=True, timeout=120)
    (tarball,) = out.glob("stateserver-ha-*.tar.gz")
    with tarfile.open(tarball) as tar:
        return {member.name.rstrip("/") for member in tar.getmembers()}


@pytest.mark.parametrize("pattern", REQUIRED_GLOBS)
def test_every_file_users_need_is_in_the_tarball(names, pattern):
    wanted = {str(path.relative_to(ROOT)) for path in ROOT.glob(pattern) if path.is_file()}
    assert wanted, f"nothing in the working tree matches {pattern}"
    assert wanted <= names, sorted(wanted - names)


@pytest.mark.parametrize("path", REQUIRED_FILES)
def test_the_collections_own_files_are_in_the_tarball(names, path):
    assert path in names


def test_no_development_or_test_material_is_in_the_tarball(names):
    stray = sorted(n for n in names
                   if any(n == top or n.startswith(f"{top}/") for top in FORBIDDEN_TOP)
                   or any(part in FORBIDDEN_PARTS or part.endswith(".egg-info") for part in n.split("/")))
    assert stray == []
