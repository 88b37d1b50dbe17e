"""The secrets modules through ansible-playbook, in one play on a one-member set.

deployment_certificates: a first deployment's CA and certificates, reused, re-issued for a changed address, never
made under --check, and no new CA for a replica set that exists. deployment_secrets: a bad value given is refused
with its variable named and nothing written."""

from __future__ import annotations

import base64
import os
import stat

from cryptography import x509
from playbook import run_tasks

CERTS = "stateserver.ha.deployment_certificates"
SECRETS = "stateserver.ha.deployment_secrets"


def machines(cluster, sm2_host: str) -> list[dict]:
    return [{"name": "sm1", "mongo_address": f"{cluster.hosts[0]}:37017", "api_address": f"{cluster.hosts[0]}:17070"},
            {"name": "sm2", "mongo_address": f"{sm2_host}:37017", "api_address": "sm2.example.net:17070"}]


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_machine_certificates_are_made_once_reused_and_reissued(tmp_path, cluster_factory):
    cluster = cluster_factory(size=2, start=1)
    nothing = [cluster.addresses[1]]  # never started: a first deployment as far as the seeds tell
    fresh, existing = tmp_path / "fresh" / "secrets", tmp_path / "existing" / "secrets"
    cluster.initiate(0)
    first = {CERTS: {"secrets_dir": str(fresh), "machines": machines(cluster, "192.0.2.12"), "seeds": nothing}}
    moved = {CERTS: {"secrets_dir": str(fresh), "machines": machines(cluster, "192.0.2.99"), "seeds": nothing}}
    run = run_tasks(tmp_path / "play", [
        {**first, "check_mode": True},
        first,
        {"ansible.builtin.slurp": {"src": str(fresh / "certs" / "sm1.crt")}},
        {"ansible.builtin.slurp": {"src": str(fresh / "ca.crt")}},
        first,
        moved,
        {CERTS: {"secrets_dir": str(existing), "machines": machines(cluster, "192.0.2.12"),
                 "seeds": cluster.addresses}},
        {SECRETS: {"secrets_dir": str(existing), "keyfile": "not-base64!", "seeds": nothing}, "no_log": True},
    ])
    check, issued, sm1_before, ca_before, again, reissued, refused, bad_keyfile = run.results
    assert check["changed"] is True and check["ca"]["action"] == "issued", run.stdout
    # "issued", not "reused"/"reissued", after the --check task: that task wrote no file.
    assert issued["changed"] is True and issued["ca"]["action"] == "issued"
    assert {c["action"] for c in issued["certificates"].values()} == {"issued"}
    assert again["changed"] is False and again["ca"]["action"] == "reused"
    assert {n: c["action"] for n, c in again["certificates"].items()} == {"sm1": "reused", "sm2": "reused"}
    assert {n: c["action"] for n, c in reissued["certificates"].items()} == {"sm1": "reused", "sm2": "reissued"}
    assert refused.get("failed") is True and "already exists" in refused["msg"]
    assert bad_keyfile.get("failed") is True and "mongod_keyfile_content" in bad_keyfile["msg"]
    assert "not-base64!" not in bad_keyfile["msg"] and not existing.exists()

    # Read back: the same CA and sm1 certificate as after the first run, sm2 re-issued for its new address.
    assert (fresh / "ca.crt").read_bytes() == base64.b64decode(ca_before["content"])
    assert (fresh / "certs" / "sm1.crt").read_bytes() == base64.b64decode(sm1_before["content"])
    ca = load(fresh / "ca.crt")
    loopback = {"127.0.0.1", "localhost"}
    for name, sans in (("sm1", {cluster.hosts[0]} | loopback), ("sm2", {"192.0.2.99", "sm2.example.net"} | loopback)):
        cert = load(fresh / "certs" / f"{name}.crt")
        cert.verify_directly_issued_by(ca)
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName)) \
            == sans
        assert stat.S_IMODE(os.stat(fresh / "certs" / f"{name}.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(fresh / "ca.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
