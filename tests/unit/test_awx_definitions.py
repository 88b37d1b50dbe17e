"""The AWX definitions shipped in extensions/awx (issue 15), checked against AWX's rules and the playbooks.

The credential type and the survey are checked against the schema AWX validates on save (field names and types,
kinds, survey types; shared/research/awx-jobs.md), the injectors are rendered the way AWX renders them at job start
(a sandboxed Jinja environment over the credential's inputs), and every injected variable and survey variable is
one the playbooks and roles read. awx_configure.yml is syntax-checked with awx.awx on the collections path, and
every argument it passes to an awx.awx module is checked against that module's documented options.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[2]
AWX = ROOT / "extensions" / "awx"
BIN = Path(sys.executable).parent
EXTRA = ROOT / "build" / "extra-collections"

# AWX's CredentialTypeInputField and survey spec rules (research note §2, §3).
FIELD_KEYS = {"id", "label", "type", "format", "choices", "secret", "multiline", "help_text", "ask_at_runtime",
              "default"}
FIELD_ID = re.compile(r"^[a-zA-Z_]+[a-zA-Z0-9_]*$")
SURVEY_TYPES = {"text", "textarea", "password", "multiplechoice", "multiselect", "integer", "float"}
# A field is a secret when its name says so or a role declares the variable it feeds no_log.
SECRET_WORDS = ("password", "keyfile", "token", "key", "secret")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


CREDENTIAL_TYPE = load(AWX / "credential_type.yml")
SURVEY = load(AWX / "survey_ensure_ha.yml")
RETIRE_SURVEY = load(AWX / "survey_retire_machine.yml")
SURVEYS = {"ensure_ha": SURVEY, "retire_machine": RETIRE_SURVEY}
FIELDS = CREDENTIAL_TYPE["inputs"]["fields"]
INJECTED = CREDENTIAL_TYPE["injectors"]["extra_vars"]


def role_options() -> dict[str, dict]:
    """Every variable a role's meta/argument_specs.yml declares, with its spec."""
    options = {}
    for spec in ROOT.glob("roles/*/meta/argument_specs.yml"):
        for entry in load(spec)["argument_specs"].values():
            options.update(entry.get("options", {}))
    return options


def read_by_playbooks(name: str) -> bool:
    """Whether a playbook (or a file it includes) reads the variable `name`."""
    word = re.compile(rf"(?<![\w.'\"]){re.escape(name)}(?!\w)|\[['\"]{re.escape(name)}['\"]\]")
    return any(word.search(path.read_text()) for path in ROOT.glob("playbooks/**/*.yml")
               if path.name != "awx_configure.yml")


def test_the_credential_type_is_one_awx_accepts():
    assert CREDENTIAL_TYPE["kind"] in ("cloud", "net")  # the only kinds AWX lets a custom type have
    assert isinstance(CREDENTIAL_TYPE["name"], str) and CREDENTIAL_TYPE["name"]
    assert set(CREDENTIAL_TYPE["injectors"]) == {"extra_vars"}
    ids = [field["id"] for field in FIELDS]
    assert len(ids) == len(set(ids))
    for field in FIELDS:
        assert set(field) <= FIELD_KEYS, field
        assert FIELD_ID.match(field["id"]) and field["id"] != "tower", field
        assert field["label"] and field.get("type", "string") in ("string", "boolean"), field
    assert set(CREDENTIAL_TYPE["inputs"]["required"]) <= set(ids)


def test_every_secret_input_is_secret():
    options = role_options()
    for field in FIELDS:
        fed = [var for var, template in INJECTED.items() if field["id"] in template]
        hidden = any(options.get(var, {}).get("no_log") for var in fed)
        if hidden or any(word in field["id"].lower() for word in SECRET_WORDS):
            assert field.get("secret") is True, field["id"]


def test_every_injected_variable_is_one_the_playbooks_and_roles_read():
    options = role_options()
    for var in INJECTED:
        assert var in options or read_by_playbooks(var), f"nothing reads {var}"


def test_the_injectors_render_the_inputs_as_awx_does():
    # AWX refuses on save an injector that names an undefined input, and renders at job start in a sandbox.
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    sample = {field["id"]: f"{field['id']}-{{{{ not rendered twice }}}}-\u00e9" for field in FIELDS}
    rendered = {var: env.from_string(template).render(**sample) for var, template in INJECTED.items()}
    assert rendered == {var: sample[var] for var in INJECTED}
    # The secrets the roles need all come from the credential; the TLS CA too, optional (no CA with TLS off).
    required = {"mongod_admin_password", "mongod_keyfile_content", "state_machine_api_token",
                "api_server_mongo_password"}
    assert set(CREDENTIAL_TYPE["inputs"]["required"]) == required
    assert set(INJECTED) == required | {"stateserver_tls_ca_certificate", "stateserver_tls_ca_key"}


def test_an_unfilled_optional_input_is_injected_as_empty_text():
    # AWX renders an input the credential does not hold as "" (shared/research/awx-jobs.md §2).
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    sample = {field["id"]: "x" if field["id"] in CREDENTIAL_TYPE["inputs"]["required"] else "" for field in FIELDS}
    rendered = {var: env.from_string(template).render(**sample) for var, template in INJECTED.items()}
    # internal/certificates.yml takes empty text as not given (test_awx_jobs.py runs a TLS job with such a credential).
    assert rendered["stateserver_tls_ca_certificate"] == rendered["stateserver_tls_ca_key"] == ""


def test_the_ca_inputs_are_multiline_and_the_key_is_secret():
    fields = {field["id"]: field for field in FIELDS}
    assert fields["stateserver_tls_ca_certificate"].get("multiline") is True
    assert fields["stateserver_tls_ca_key"].get("multiline") is True
    assert fields["stateserver_tls_ca_key"].get("secret") is True


@pytest.mark.parametrize("name", sorted(SURVEYS))
def test_the_survey_is_one_awx_accepts(name):
    survey = SURVEYS[name]
    assert isinstance(survey["name"], str) and isinstance(survey["description"], str)
    assert survey["spec"]
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables))
    for q in survey["spec"]:
        assert q["type"] in SURVEY_TYPES and isinstance(q["question_name"], str) and q["question_name"], q
        assert isinstance(q["required"], bool), q
        if q["type"] == "multiplechoice":
            assert all(isinstance(c, str) for c in q["choices"]) and q["default"] in q["choices"], q
        if q["type"] == "integer":
            assert all(isinstance(q.get(k), int) and not isinstance(q.get(k), bool) for k in ("min", "max", "default"))
            assert q["min"] <= q["default"] <= q["max"], q
        if q["type"] == "text":
            # min and max are lengths; a default would have to fit them.
            assert all(isinstance(q.get(k), int) and not isinstance(q.get(k), bool) for k in ("min", "max")), q
            assert "default" not in q or (isinstance(q["default"], str) and q["min"] <= len(q["default"]) <= q["max"])
        # A survey answer would override the credential's extra var of the same name.
        assert q["variable"] not in INJECTED, q
        assert read_by_playbooks(q["variable"]), q


def test_the_survey_asks_what_ensure_ha_reads_and_no_secret():
    questions = {q["variable"]: q for q in SURVEY["spec"]}
    assert set(questions) == {"n", "down_after"}
    assert questions["n"]["choices"] == ["3", "5", "7"] and questions["n"]["default"] == "3"
    # Within what ensure_availability accepts (0 to a day).
    sys.path.insert(0, str(ROOT / "build" / "collections"))
    from ansible_collections.stateserver.ha.plugins.modules.ensure_availability import MAX_DOWN_AFTER

    assert 0 <= questions["down_after"]["min"] and questions["down_after"]["max"] <= MAX_DOWN_AFTER


def test_the_retire_survey_asks_for_one_machine_and_a_wipe_the_playbook_accepts():
    questions = {q["variable"]: q for q in RETIRE_SURVEY["spec"]}
    assert set(questions) == {"machine", "wipe"}
    assert questions["machine"]["type"] == "text" and questions["machine"]["required"] is True
    # A required text question with no default: AWX applies no empty answer of its own.
    assert "default" not in questions["machine"] and questions["machine"]["min"] >= 1
    # Deleting is never the default; each choice is one spelling retire-machine.yml's check accepts.
    wipe = questions["wipe"]
    assert wipe["type"] == "multiplechoice" and wipe["default"] == "false"
    assert sorted(wipe["choices"]) == ["false", "true"]
    accepted = re.search(r"wipe \| default\(false\) \| string \| lower in (\[.*?\])",
                         (ROOT / "playbooks" / "retire-machine.yml").read_text())
    assert accepted and set(wipe["choices"]) <= set(yaml.safe_load(accepted.group(1)))


@pytest.fixture(scope="module")
def awx_env(tmp_path_factory) -> dict:
    """An environment with awx.awx (unpacked from PyPI's ansible by scripts/fetch-collections) and this collection."""
    fetched = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch-collections"), "awx.awx"], check=False,
                             capture_output=True, text=True, timeout=300)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    home = tmp_path_factory.mktemp("ansible-home")
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_HOME=str(home),
                ANSIBLE_COLLECTIONS_PATH=f"{EXTRA}{os.pathsep}{ROOT / 'build' / 'collections'}")


def test_awx_configure_passes_syntax_check(awx_env):
    for playbook in ("stateserver.ha.awx_configure", str(AWX / "project" / "ensure_ha.yml"),
                     str(AWX / "project" / "retire_machine.yml")):
        proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", playbook], env=awx_env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_awx_module_argument_awx_configure_passes_exists(awx_env):
    (play,) = load(ROOT / "playbooks" / "awx_configure.yml")
    calls: dict[str, set[str]] = {}
    for task in play["tasks"]:
        for key, args in task.items():
            if key.startswith("awx.awx."):
                calls.setdefault(key, set()).update(args)
    assert {"awx.awx.credential_type", "awx.awx.credential", "awx.awx.job_template"} <= set(calls)
    defaults = set(play["module_defaults"]["group/awx.awx.controller"])
    proc = subprocess.run([str(BIN / "ansible-doc"), "-j", *calls], env=awx_env, capture_output=True, text=True,
                          timeout=120, check=True)
    docs = json.loads(proc.stdout)
    for module, used in calls.items():
        options = docs[module]["doc"]["options"]
        known = set(options) | {alias for o in options.values() for alias in o.get("aliases", [])}
        assert used | defaults <= known, (module, sorted((used | defaults) - known))
