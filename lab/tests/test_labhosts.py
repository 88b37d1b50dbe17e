"""The lab's hosts are real hosts to Ansible: own address, filesystem, hostname and systemd, reached over SSH, on a
network that leads nowhere but to each other and the controller; powering off keeps the disk; down removes all.

Needs root, systemd-nspawn and debootstrap (labhosts.py installs them with apt-get when missing). Uses the bridge
10.178.9.0/24, which no molecule scenario uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LABHOSTS = Path(__file__).resolve().parents[1] / "labhosts.py"
PREFIX, SUBNET = "sslt", "10.178.9"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, mounts, bridges)")


def labhosts(state: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(LABHOSTS), *args, "--state", str(state)], check=True, timeout=600)


def ssh(state: Path, ip: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-i", str(state / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"root@{ip}", command],
        text=True, capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("labhosts") / "state"
    labhosts(state, "up", f"--prefix={PREFIX}", f"--subnet={SUBNET}", "--count=2", "--name=t", "--units=1")
    try:
        yield state
    finally:
        labhosts(state, "down")


def test_hosts_boot_systemd_and_answer_ssh_with_their_own_name_and_address(lab: Path) -> None:
    for name, ip in (("t1", f"{SUBNET}.11"), ("t2", f"{SUBNET}.12"), ("unit1", f"{SUBNET}.13")):
        out = ssh(lab, ip, "hostname; readlink /proc/1/exe; systemctl is-system-running --wait; ip -4 -o addr show eth0")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("\n")
        assert lines[0] == name
        assert lines[1].endswith("systemd")
        assert lines[2] in ("running", "degraded")
        assert f"inet {ip}/24" in lines[3]


def test_inventory_puts_state_machine_hosts_and_unit_hosts_in_their_groups(lab: Path) -> None:
    # Parsed by Ansible itself, as the playbooks will see it.
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(lab / "inventory.yml"),
                          "--list"], text=True, capture_output=True, check=True, timeout=60)
    inventory = json.loads(out.stdout)
    assert sorted(inventory["state_machines"]["hosts"]) == ["t1", "t2"]
    assert inventory["units"]["hosts"] == ["unit1"]
    hostvars = inventory["_meta"]["hostvars"]
    assert hostvars["unit1"]["ansible_host"] == f"{SUBNET}.13"
    assert "unit_wheel_dir" in hostvars["unit1"] and "mongod_install_method" not in hostvars["unit1"]
    assert hostvars["t2"]["mongod_install_method"] == "simulator"
    assert all(hostvars[h]["ansible_user"] == "root" for h in ("t1", "t2", "unit1"))


def test_network_leads_only_to_peers_and_controller(lab: Path) -> None:
    out = ssh(lab, f"{SUBNET}.11", "ip route show default; cat /etc/resolv.conf; getent hosts t2; "
                                   f"ping -c1 -W2 {SUBNET}.12 >/dev/null && echo peer-ok; "
                                   f"ping -c1 -W2 {SUBNET}.1 >/dev/null && echo controller-ok")
    assert out.returncode == 0, out.stderr
    assert "default" not in out.stdout
    assert "nameserver 127.0.0.1" in out.stdout
    assert f"{SUBNET}.12" in out.stdout
    assert "peer-ok" in out.stdout and "controller-ok" in out.stdout
    assert Path(f"/proc/sys/net/ipv4/conf/{PREFIX}-br/forwarding").read_text().strip() == "0"


def test_filesystems_are_separate_and_survive_a_power_cycle(lab: Path) -> None:
    assert ssh(lab, f"{SUBNET}.11", "echo only-on-t1 > /etc/lab-marker").returncode == 0
    assert ssh(lab, f"{SUBNET}.12", "test -e /etc/lab-marker").returncode == 1
    assert not Path("/etc/lab-marker").exists()
    labhosts(lab, "stop", "t1")
    assert ssh(lab, f"{SUBNET}.11", "true").returncode != 0
    labhosts(lab, "start", "t1")
    out = ssh(lab, f"{SUBNET}.11", "cat /etc/lab-marker")
    assert out.stdout.strip() == "only-on-t1"


def test_down_removes_processes_namespaces_mounts_and_bridge(tmp_path: Path) -> None:
    state = tmp_path / "state"
    labhosts(state, "up", "--prefix=sslu", "--subnet=10.178.10", "--names=solo")
    record = json.loads((state / "hosts.json").read_text())["hosts"][0]
    assert record["name"] == "solo"
    labhosts(state, "down")
    assert not Path(f"/proc/{record['pid']}").exists() or b"systemd-nspawn" not in Path(
        f"/proc/{record['pid']}/cmdline").read_bytes()
    assert not Path(f"/run/netns/{record['netns']}").exists()
    assert subprocess.run(["ip", "link", "show", "sslu-br"], capture_output=True, check=False).returncode != 0
    assert record["dir"] not in Path("/proc/mounts").read_text()
    assert not state.exists()
