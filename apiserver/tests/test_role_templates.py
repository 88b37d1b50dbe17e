"""The api_server role's templates, rendered by ansible with the role's defaults, give a config the server accepts
and a systemd unit whose command line runs it; the secrets are referenced by path, never written into either."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stateserver_api.main import load_settings

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "api_server"
ANSIBLE = Path(sys.executable).parent / "ansible-playbook"

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not shutil.which(str(ANSIBLE)), reason="needs ansible-playbook in the venv")]


def test_role_templates_render_a_config_the_server_accepts(tmp_path: Path) -> None:
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml")],
        "vars": {"ansible_python_interpreter": sys.executable, "ansible_host": "10.177.0.11", "api_server_token": "never-in-a-template-0123",
                 "api_server_mongo_password": "never-in-a-template-pw", "out": str(tmp_path)},
        "tasks": [
            {"name": "Render the config", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "api.json.j2"), "dest": "{{ out }}/api.json", "mode": "0600"}},
            {"name": "Render the unit", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "stateserver-api.service.j2"), "dest": "{{ out }}/unit",
                "mode": "0600"}},
        ],
    }]))
    env = {**os.environ, "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "ANSIBLE_HOME": str(tmp_path / "ansible-home")}
    run = subprocess.run([str(ANSIBLE), "-i", "localhost,", str(playbook)], capture_output=True, text=True,
                         env=env, timeout=100, check=False)
    assert run.returncode == 0, run.stdout + run.stderr

    config = json.loads((tmp_path / "api.json").read_text())
    settings = load_settings(["--config", str(tmp_path / "api.json")])
    assert (settings.host, settings.port) == ("10.177.0.11", 17070)
    assert settings.mongo_seeds == ["10.177.0.11:37017"]
    assert settings.token_file == "/etc/stateserver-api/token"
    assert settings.mongo_password_file == "/etc/stateserver-api/mongo-password"
    unit = (tmp_path / "unit").read_text()
    assert "ExecStart=/opt/stateserver-api/bin/stateserver-api --config /etc/stateserver-api/api.json\n" in unit
    assert "User=stateserver-api\n" in unit
    for rendered in (json.dumps(config), unit):
        assert "never-in-a-template" not in rendered
