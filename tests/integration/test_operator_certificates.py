"""Certificates the operator's own CA issued (issue 14), through ensure-ha.yml's certificates step: vars.yml, pool.yml
and internal/certificates.yml run by ansible-playbook on an inventory whose group variables carry the CA certificate
(no key) and each machine's certificate and key, as a site whose corporate CA keeps its key gives them.

The files the roles install from (the controller copies, and the mongod role's one PEM rendered from them) are the
operator's bytes; a certificate that lacks one of its machine's names fails the step naming that machine, and nothing
is written. No member runs: with the CA given nothing is asked of the set, and nothing can be issued.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playbook import REPO, ansible_env, run_recorded, run_tasks
from test_retire_playbooks import RECORDER

pytestmark = pytest.mark.timeout(300)

INTERNAL = REPO / "playbooks" / "internal"
ROLE_VARS = yaml.safe_load((REPO / "roles" / "mongod" / "vars" / "main.yml").read_text())
IPS = {"sm1": "192.0.2.31", "sm2": "192.0.2.32", "sm3": "192.0.2.33"}
NOW = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (as the module util)


def _name(common: str, unit: str = "") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                      *([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)] if unit else []),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(cert, key) -> tuple[str, str]:
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode())


def corporate_ca():
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name("Example Corp Issuing CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA384()))
    return cert, key


def issue(ca, machine: str, ip: str, unit: str = "") -> tuple[str, str]:
    """A certificate as a corporate CA issues it: its own subject, and a name of its own besides the required ones.
    `unit`: an OU in the subject (an API server's certificate must differ from the members' in O/OU/DC)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(f"{machine}.corp.example.test"), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address(ip))]
    cert = (x509.CertificateBuilder().subject_name(_name(f"{machine}.corp.example.test", unit))
            .issuer_name(ca[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca[1], hashes.SHA256()))
    return _pem(cert, key)


def run_certificates_step(workdir: Path, ca_pem: str, given: dict, api: dict | None = None) -> tuple[dict, str]:
    """ensure-ha.yml's certificates step on an inventory of three state machines; (its result or failure, stdout).
    api: the API server certificates given, for some machines."""
    inventory = workdir / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.ini").write_text(
        "[state_machines]\n" + "".join(f"{name} ansible_host={ip}\n" for name, ip in IPS.items()))
    (inventory / "group_vars" / "state_machines.yml").write_text(yaml.safe_dump({
        "stateserver_tls_ca_certificate": ca_pem,
        "stateserver_tls_certificates": {
            name: {"certificate": c, "key": k, **({"api_certificate": api[name][0], "api_key": api[name][1]}
                                                  if name in (api or {}) else {})}
            for name, (c, k) in given.items()},
    }))
    out = workdir / "result.json"
    playbook = [{
        "name": "The certificates step", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(INTERNAL / "vars.yml")],
        "vars": {"ansible_python_interpreter": sys.executable},
        "tasks": [
            {"name": "Pool", "ansible.builtin.import_tasks": str(INTERNAL / "pool.yml")},
            {"name": "Certificates", "block": [
                {"name": "Certificates", "ansible.builtin.import_tasks": str(INTERNAL / "certificates.yml")}],
             "rescue": [{"name": "Keep the failure",
                         "ansible.builtin.set_fact": {"__failed": "{{ ansible_failed_result }}"}}]},
            {"name": "Write it down", "ansible.builtin.copy": {
                "content": "{{ (__failed | default(__ha_certificates)) | to_json }}", "dest": str(out),
                "mode": "0600"}},
        ],
    }]
    (workdir / "play.yml").write_text(json.dumps(playbook))
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory / "hosts.ini"),
               str(workdir / "play.yml")]
    proc = subprocess.run(command, env=ansible_env(workdir / "ansible-home"),
                          capture_output=True, text=True, timeout=240, check=False, cwd=str(workdir))
    assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_operator_certificates_are_installed_as_given_and_a_wrong_one_stops_everything(tmp_path):
    ca = corporate_ca()
    ca_pem = _pem(*ca)[0]
    given = {name: issue(ca, name, ip) for name, ip in IPS.items()}
    # API server certificates for sm1 and sm3; sm2's API server falls back to its machine certificate, with a warning.
    api = {name: issue(ca, name, IPS[name], unit="stateserver api") for name in ("sm1", "sm3")}

    result, stdout = run_certificates_step(tmp_path / "good", ca_pem, given, api)
    assert not result.get("failed") and not result["changed"], result
    assert result["ca"]["action"] == "given" and {c["action"] for c in result["certificates"].values()} == {"given"}
    apis = {name: cert["api"] for name, cert in result["certificates"].items()}
    assert {name: a["action"] for name, a in apis.items()} == {"sm1": "given", "sm2": "member", "sm3": "given"}
    for name in ("sm1", "sm3"):
        assert (Path(apis[name]["certificate"]).read_text(), Path(apis[name]["key"]).read_text()) == api[name]
    assert (apis["sm2"]["certificate"], apis["sm2"]["key"]) \
        == (result["certificates"]["sm2"]["certificate"], result["certificates"]["sm2"]["key"])
    assert [w for w in result["warnings"] if "No API certificate is given for sm2 " in w], result["warnings"]
    # The keys never reach the output, though they came in as variables.
    assert all(given[name][1].splitlines()[1] not in stdout and api.get(name, given[name])[1].splitlines()[1]
               not in stdout for name in IPS)
    secrets = tmp_path / "good" / "inventory" / "stateserver-secrets"
    assert (secrets / "ca.crt").read_text() == ca_pem and not (secrets / "ca.key").exists()
    # What each role installs: the controller copies (the api_server role copies them as they are), and the
    # mongod role's one PEM rendered by Ansible from them.
    rendered = run_tasks(tmp_path / "render", [
        {"ansible.builtin.debug": {"msg": {"pem": "{{ __mongod_tls_pem_content }}",
                                           "ca": "{{ __mongod_tls_ca_content }}"}},
         "vars": {**ROLE_VARS, "mongod_tls_ca_file": result["ca"]["certificate"],
                  "mongod_tls_certificate_file": result["certificates"][name]["certificate"],
                  "mongod_tls_key_file": result["certificates"][name]["key"]}}
        for name in sorted(IPS)])
    assert rendered.rc == 0, rendered.stdout
    for i, name in enumerate(sorted(IPS)):
        cert_pem, key_pem = given[name]
        files = result["certificates"][name]
        assert Path(files["certificate"]).read_bytes() == cert_pem.encode()
        assert Path(files["key"]).read_bytes() == key_pem.encode()
        assert Path(files["key"]).stat().st_mode & 0o777 == 0o600
        assert rendered[i]["msg"] == {"pem": cert_pem + key_pem, "ca": ca_pem}

    # sm2's certificate was issued for another address: the step fails naming sm2 and what it lacks, and writes
    # nothing, not even the other machines' good certificates or the CA.
    # sm3's API certificate has its members' O/OU/DC, so mongod would take it for a member's: refused too.
    wrong = {**given, "sm2": issue(ca, "sm2", "192.0.2.99")}
    result, _stdout = run_certificates_step(tmp_path / "wrong", ca_pem, wrong,
                                            {**api, "sm3": issue(ca, "sm3", IPS["sm3"])})
    assert result.get("failed") and result["problems"] == {
        "sm2": "the given certificate lacks the subject alternative names IP:192.0.2.32",
        "sm3": "the given API certificate's subject has the same O, OU and DC as the machine's certificate, so "
               "mongod would take it for a member's"}, result
    assert "sm2: the given certificate lacks" in result["msg"]
    assert not (tmp_path / "wrong" / "inventory" / "stateserver-secrets").exists()


def test_a_rotate_job_reads_the_set_with_the_ca_its_credential_gives(tmp_path):
    """An AWX job's directory is new: rotate-certificates.yml stores the credential's CA before it reads the set,
    so the read verifies with it and fails only on what the set says (here: nothing answers), not on a missing
    ca.crt. Nothing runs on the machines: the set is absent, and the play stops before any change."""
    ca = corporate_ca()
    ca_pem, ca_key_pem = _pem(*ca)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.ini").write_text("[state_machines]\n" + "".join(
        f"sm{i} ansible_host=127.42.0.{i} mongod_port=1 ansible_connection=local\n" for i in (1, 2, 3)))
    # The credential's extra vars, as AWX injects them (tests/integration/test_awx_jobs.py has the full job).
    (tmp_path / "extra.json").write_text(json.dumps({
        "awx_job_id": 7, "mongod_admin_password": "rotate-pw", "mongod_keyfile_content": "k" * 64,
        "state_machine_api_token": "t" * 32, "api_server_mongo_password": "rotate-api-pw",
        "stateserver_tls_ca_certificate": ca_pem, "stateserver_tls_ca_key": ca_key_pem,
        "ansible_python_interpreter": sys.executable}))
    proc, entries = run_recorded(tmp_path, RECORDER, [
        "-i", str(inventory / "hosts.ini"), "-e", f"@{tmp_path / 'extra.json'}",
        str(REPO / "playbooks" / "rotate-certificates.yml")], timeout=240)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    on_controller = {e["task"]: e["result"] for e in entries if e["host"] == "localhost"}
    assert on_controller["Store the deployment CA given in variables"]["ca"]["action"] == "given", on_controller
    # The set was read (with the stored CA) and found absent; the play stopped at the health check, before any change.
    read = on_controller["Read the replica set and the machine records"]
    assert not read.get("failed") and read["initiated"] is False, read
    check = on_controller["Check that every member is healthy and in the inventory before any restart"]
    assert check["failed"] and check["msg"].startswith("The replica set does not exist or does not answer."), check
    secrets = inventory / "stateserver-secrets"
    assert (secrets / "ca.crt").read_text() == ca_pem and (secrets / "ca.key").read_text() == ca_key_pem
    assert not (secrets / "certs").exists()
