"""playbooks/awx_configure.yml against a stand-in AWX API on loopback: what it creates, and that a re-run writes nothing.

The stand-in keeps AWX's objects in memory behind the REST paths awx.awx's modules use (lists filtered by query,
POST to create, PATCH to update, a job template's survey_spec and credentials sub-resources) and answers secret
credential inputs with $encrypted$ as AWX does. It is not AWX: it does not validate what it stores, so the tests
assert that what arrived is exactly the shipped definitions (the unit tests check those against AWX's rules).
awx.awx comes from PyPI's ansible package (scripts/fetch-collections).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from playbook import REPO, ansible_env

pytestmark = pytest.mark.timeout(300)

AWX = REPO / "extensions" / "awx"
TOKEN = "stand-in-controller-token"
SECRETS = {"mongod_admin_password": "pw-{{ not a template }}-1", "mongod_keyfile_content": "a" * 756,
           "state_machine_api_token": "token-Zq9", "api_server_mongo_password": "api-mongo-Zq9",
           # The optional TLS inputs, multi-line as PEM is (the values need not parse here).
           "stateserver_tls_ca_certificate": "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n",
           "stateserver_tls_ca_key": "-----BEGIN PRIVATE KEY-----\nMIGHkey\n-----END PRIVATE KEY-----\n"}
SECRET_FIELDS = {f["id"] for f in yaml.safe_load((AWX / "credential_type.yml").read_text())["inputs"]["fields"]
                 if f.get("secret")}


class Controller:
    """AWX's objects by kind (credential_types, credentials, ...) and every request it was sent."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[int, dict]] = {}
        self.surveys: dict[int, dict] = {}
        self.attached: dict[int, list[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.next_id = 1

    def add(self, kind: str, fields: dict) -> dict:
        oid, self.next_id = self.next_id, self.next_id + 1
        url = f"/api/v2/{kind}/{oid}/"
        obj = {"id": oid, "url": url, "type": kind.rstrip("s"), "summary_fields": {}, "scm_revision": "",
               "related": {"survey_spec": f"{url}survey_spec/", "credentials": f"{url}credentials/"}, **fields}
        self.objects.setdefault(kind, {})[oid] = obj
        return obj

    def shown(self, obj: dict) -> dict:
        if "inputs" in obj and obj["type"] == "credential":
            inputs = {k: "$encrypted$" if k in SECRET_FIELDS else v for k, v in obj["inputs"].items()}
            return {**obj, "inputs": inputs}
        return obj

    def named(self, kind: str, name: str) -> dict:
        (obj,) = [o for o in self.objects.get(kind, {}).values() if o["name"] == name]
        return obj

    def writes(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _auth in self.requests if method != "GET"]

    def handle(self, method: str, target: str, body: dict | None) -> tuple[int, object]:
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")[2:]  # after api/v2
        kind = parts[0]
        if len(parts) == 1 and method == "GET":
            query = dict(parse_qsl(url.query))
            wanted = {k: v for k, v in query.items() if not k.startswith(("or__", "page"))}
            found = [self.shown(o) for o in self.objects.get(kind, {}).values()
                     if all(str(o.get(k)) == v for k, v in wanted.items())
                     and ("or__name" not in query or o["name"] == query["or__name"] or str(o["id"]) == query["or__id"])]
            return 200, {"count": len(found), "results": found, "next": None, "previous": None}
        if len(parts) == 1 and method == "POST":
            return 201, self.shown(self.add(kind, body or {}))
        oid = int(parts[1])
        obj = self.objects[kind][oid]
        if len(parts) == 2 and method == "GET":
            return 200, self.shown(obj)
        if len(parts) == 2 and method == "PATCH":
            obj.update(body or {})
            return 200, self.shown(obj)
        if parts[2:] == ["survey_spec"]:
            if method == "POST":
                self.surveys[oid] = body or {}
            return 200, self.surveys.get(oid, {})
        if parts[2:] == ["credentials"]:
            ids = self.attached.setdefault(oid, [])
            if method == "GET":
                found = [self.shown(self.objects["credentials"][i]) for i in ids]
                return 200, {"count": len(found), "results": found, "next": None, "previous": None}
            if (body or {}).get("disassociate"):
                ids.remove(body["id"])
            else:
                ids.append(body["id"])
            return 204, None
        return 404, {"detail": "not found"}


@pytest.fixture
def controller():
    state = Controller()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((self.command, self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, payload = 401, {"detail": "Authentication credentials were not provided."}
            else:
                status, payload = state.handle(self.command, self.path, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.add("organizations", {"name": "Default"})
    state.add("inventories", {"name": "lab"})
    state.add("credentials", {"name": "lab ssh", "credential_type": 1, "inputs": {}})
    state.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def extra_collections() -> Path:
    fetched = subprocess.run([sys.executable, str(REPO / "scripts" / "fetch-collections"), "awx.awx"], check=False,
                             capture_output=True, text=True, timeout=300)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    return REPO / "build" / "extra-collections"


def configure(workdir: Path, controller: Controller, extra_collections: Path, extra: dict) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    env = ansible_env(workdir / "ansible-home")
    env.update(ANSIBLE_COLLECTIONS_PATH=f"{extra_collections}{os.pathsep}{env['ANSIBLE_COLLECTIONS_PATH']}",
               CONTROLLER_HOST=controller.host, CONTROLLER_OAUTH_TOKEN=TOKEN, CONTROLLER_VERIFY_SSL="false")
    # As an operator's vars file: secret values tagged !unsafe, so a password with {{ in it is not templated.
    lines = [f"{key}: {json.dumps(value)}" for key, value in extra.items() if key != "awx_deployment_secrets"]
    if "awx_deployment_secrets" in extra:
        lines.append("awx_deployment_secrets:")
        lines += [f"  {key}: !unsafe {json.dumps(value)}" for key, value in extra["awx_deployment_secrets"].items()]
    (workdir / "vars.yml").write_text("\n".join(lines) + "\n")
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "stateserver.ha.awx_configure",
                           "-e", f"@{workdir / 'vars.yml'}"], env=env, capture_output=True, text=True, timeout=240,
                          check=False, cwd=str(workdir))


FULL = {"awx_inventory": "lab", "awx_project": "stateserver", "awx_project_scm_url": "https://git.invalid/ops.git",
        "awx_machine_credential": "lab ssh", "awx_deployment_secrets": SECRETS}


def test_awx_configure_creates_the_credential_type_credential_and_job_templates(
        tmp_path, controller, extra_collections):
    run = configure(tmp_path / "first", controller, extra_collections, FULL)
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(auth == f"Bearer {TOKEN}" for _m, _p, auth in controller.requests)

    shipped = yaml.safe_load((AWX / "credential_type.yml").read_text())
    ctype = controller.named("credential_types", shipped["name"])
    # The injectors arrive as templates for AWX to render, not rendered by the play.
    assert ctype["injectors"] == shipped["injectors"] and ctype["inputs"] == shipped["inputs"]
    assert ctype["kind"] == shipped["kind"]

    credential = controller.named("credentials", "stateserver.ha lab")
    assert credential["inputs"] == SECRETS and credential["credential_type"] == ctype["id"]
    assert credential["organization"] == controller.named("organizations", "Default")["id"]

    project = controller.named("projects", "stateserver")
    assert project["scm_type"] == "git" and project["scm_url"] == FULL["awx_project_scm_url"]

    # One job template per playbook of the project skeleton, each with its survey and both credentials.
    assert sorted(o["name"] for o in controller.objects["job_templates"].values()) == [
        "stateserver.ha ensure_ha", "stateserver.ha retire_machine"]
    for name in ("ensure_ha", "retire_machine"):
        template = controller.named("job_templates", f"stateserver.ha {name}")
        assert (AWX / "project" / template["playbook"]).exists()
        assert template["playbook"] == f"{name}.yml" and template["project"] == project["id"]
        assert template["inventory"] == controller.named("inventories", "lab")["id"]
        assert template["survey_enabled"] is True and template["ask_variables_on_launch"] is False
        assert template["allow_simultaneous"] is False
        assert controller.surveys[template["id"]] == yaml.safe_load((AWX / f"survey_{name}.yml").read_text())
        assert sorted(controller.attached[template["id"]]) == sorted(
            [credential["id"], controller.named("credentials", "lab ssh")["id"]])
    for secret in SECRETS.values():
        assert secret not in run.stdout + run.stderr

    # A second run finds everything as described and writes nothing.
    written = len(controller.writes())
    again = configure(tmp_path / "again", controller, extra_collections, FULL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert controller.writes()[written:] == []


@pytest.mark.parametrize("extra, words", [
    ({k: v for k, v in FULL.items() if k != "awx_inventory"}, ["awx_inventory", "Nothing was changed"]),
    ({**FULL, "awx_deployment_secrets": {"mongod_admin_password": "x"}}, ["awx_deployment_secrets", "Nothing"]),
    ({**FULL, "awx_deployment_secrets": {**SECRETS, "state_machine_api_token": ""}}, ["non-empty strings"]),
    ({**FULL, "awx_deployment_secrets": {**SECRETS, "stateserver_tls_ca_file": "/x"}}, ["stateserver_tls_ca_key"]),
])
def test_awx_configure_refuses_bad_input_before_calling_the_controller(
        tmp_path, controller, extra_collections, extra, words):
    run = configure(tmp_path, controller, extra_collections, extra)
    assert run.returncode != 0
    assert controller.requests == []
    for word in words:
        assert word in run.stdout, run.stdout
    for secret in SECRETS.values():
        assert secret not in run.stdout + run.stderr
