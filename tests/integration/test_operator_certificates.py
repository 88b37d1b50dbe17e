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
from playbook import REPO, ansible_env, run_tasks

pytestmark = pytest.mark.timeout(300)

INTERNAL = REPO / "playbooks" / "internal"
ROLE_VARS = yaml.safe_load((REPO / "roles" / "mongod" / "vars" / "main.yml").read_text())
IPS = {"sm1": "192.0.2.31", "sm2": "192.0.2.32", "sm3": "192.0.2.33"}
NOW = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (as the module util)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
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


def issue(ca, machine: str, ip: str) -> tuple[str, str]:
    """A certificate as a corporate CA issues it: its own subject, and a name of its own besides the required ones."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(f"{machine}.corp.example.test"), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address(ip))]
    cert = (x509.CertificateBuilder().subject_name(_name(f"{machine}.corp.example.test")).issuer_name(ca[0].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1)).not_valid_after(NOW + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca[1], hashes.SHA256()))
    return _pem(cert, key)


def run_certificates_step(workdir: Path, ca_pem: str, given: dict) -> tuple[dict, str]:
    """ensure-ha.yml's certificates step on an inventory of three state machines; (its result or failure, stdout)."""
    inventory = workdir / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "hosts.ini").write_text(
        "[state_machines]\n" + "".join(f"{name} ansible_host={ip}\n" for name, ip in IPS.items()))
    (inventory / "group_vars" / "state_machines.yml").write_text(yaml.safe_dump({
        "stateserver_tls_ca_certificate": ca_pem,
        "stateserver_tls_certificates": {name: {"certificate": c, "key": k} for name, (c, k) in given.items()},
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

    result, stdout = run_certificates_step(tmp_path / "good", ca_pem, given)
    assert not result.get("failed") and not result["changed"], result
    assert result["ca"]["action"] == "given" and {c["action"] for c in result["certificates"].values()} == {"given"}
    # The keys never reach the output, though they came in as variables.
    assert all(given[name][1].splitlines()[1] not in stdout for name in IPS)
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
    wrong = {**given, "sm2": issue(ca, "sm2", "192.0.2.99")}
    result, _stdout = run_certificates_step(tmp_path / "wrong", ca_pem, wrong)
    assert result.get("failed") and result["problems"] == {
        "sm2": "the given certificate lacks the subject alternative names IP:192.0.2.32"}, result
    assert "sm2: the given certificate lacks" in result["msg"]
    assert not (tmp_path / "wrong" / "inventory" / "stateserver-secrets").exists()
