"""Helpers for the scenarios' testinfra tests: read the real replica set through pymongo, run the playbooks.

Imported by each scenario's tests/conftest.py. Everything is read back from the system (replica set config and
status, machine records, files on the hosts), never from Ansible's output alone. Every scenario runs with TLS on
(the default): mongod and the API servers are reached over TLS, verified with the deployment CA that ensure-ha.yml
keeps in the scenario's secrets directory.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mongosim.testing import down_seconds
from pymongo import MongoClient, ReadPreference

ROOT = Path(__file__).resolve().parents[2]
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
PORT = 37017
API_PORT = 17070
PLAYBOOK_TIMEOUT = 900


def hosts() -> list[dict[str, Any]]:
    """The scenario's hosts as lab/labhosts.py recorded them (name, ip, ...)."""
    return json.loads((EPHEMERAL / "hosts" / "hosts.json").read_text())["hosts"]


def address(name: str) -> str:
    return next(h["ip"] for h in hosts() if h["name"] == name)


def admin_password() -> str:
    return (EPHEMERAL / "secrets" / "admin-password").read_text().strip()


def keyfile() -> str:
    return (EPHEMERAL / "secrets" / "keyfile").read_text().strip()


def ca_file() -> Path:
    """The deployment CA on the controller: what every client here verifies the members and API servers with."""
    return EPHEMERAL / "secrets" / "ca.crt"


def tls_options() -> dict[str, Any]:
    return {"tls": True, "tlsCAFile": str(ca_file())}


def client(**kwargs: Any) -> MongoClient:
    """An authenticated TLS client of the whole set, found through every scenario host."""
    seeds = [f"{h['ip']}:{PORT}" for h in hosts()]
    options: dict[str, Any] = {
        "replicaSet": "stateserver", "username": "admin", "password": admin_password(), "authSource": "admin",
        "serverSelectionTimeoutMS": 15000, "read_preference": ReadPreference.PRIMARY_PREFERRED, **tls_options(),
    }
    options.update(kwargs)
    return MongoClient(seeds, **options)


def member_client(name: str, **kwargs: Any) -> MongoClient:
    """A TLS client of one host's member only (direct connection), logged in as admin unless told otherwise."""
    options: dict[str, Any] = {
        "directConnection": True, "username": "admin", "password": admin_password(), "authSource": "admin",
        "serverSelectionTimeoutMS": 15000, **tls_options(),
    }
    options.update(kwargs)
    return MongoClient(f"{address(name)}:{PORT}", **options)


def replset_config() -> dict[str, Any]:
    with client() as c:
        return c.admin.command("replSetGetConfig")["config"]


def replset_status() -> dict[str, Any]:
    with client() as c:
        return c.admin.command("replSetGetStatus")


def machine_of(member: dict[str, Any]) -> str | None:
    return member.get("tags", {}).get("stateserver-machine")


def member_down_for(name: str) -> float:
    """Seconds since the set last heard from that machine's member, as the primary's status reports it: the
    measure ensure_availability compares with down_after."""
    return down_seconds(replset_status(), f"{address(name)}:{PORT}")


def voters(config: dict[str, Any]) -> list[str]:
    return sorted(machine_of(m) or m["host"] for m in config["members"] if m.get("votes", 1))


def primaries(status: dict[str, Any]) -> list[str]:
    return [m["name"] for m in status["members"] if m["stateStr"] == "PRIMARY"]


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    """Poll until predicate() is truthy; errors count as 'not yet'. Fails with what was awaited and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - the set may be electing; keep polling until the deadline
            last = exc
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def healthy_voters(count: int, timeout: float = 120) -> dict[str, Any]:
    """Wait until the set has count voters, all PRIMARY/SECONDARY with exactly one primary; return the status."""
    def ok() -> dict[str, Any] | None:
        config, status = replset_config(), replset_status()
        vote_hosts = {m["host"] for m in config["members"] if m.get("votes", 1)}
        states = {m["name"]: m["stateStr"] for m in status["members"]}
        healthy = all(states.get(h) in ("PRIMARY", "SECONDARY") for h in vote_hosts)
        return status if len(vote_hosts) == count and healthy and len(primaries(status)) == 1 else None
    return wait_until(ok, timeout, f"{count} healthy voters and one primary")


def run_playbook(playbook: str, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a playbook of this collection against the scenario's inventory, as a user would."""
    env = dict(os.environ, ANSIBLE_PIPELINING="True", ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    cmd = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(ROOT / "playbooks" / playbook), *args]
    proc = subprocess.run(cmd, check=False, env=env, text=True, capture_output=True, timeout=PLAYBOOK_TIMEOUT,
                          cwd=ROOT)
    if log is not None:
        log.write_text(proc.stdout + proc.stderr)
    return proc


def labhosts(*args: str) -> None:
    """Power scenario hosts off or on (lab/labhosts.py stop|start NAME...)."""
    subprocess.run([sys.executable, str(ROOT / "lab" / "labhosts.py"), *args, "--state", str(EPHEMERAL / "hosts")],
                   check=True, timeout=180)


def ssh_run(name: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a scenario host as root over SSH; the completed process, whatever its exit code."""
    key = EPHEMERAL / "hosts" / "id_ed25519"
    return subprocess.run(
        ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", f"root@{address(name)}", command],
        check=False, text=True, capture_output=True, timeout=timeout)


def ssh(name: str, command: str) -> str:
    """Run a shell command on a scenario host as root over SSH and return its output; fail on a non-zero exit."""
    proc = ssh_run(name, command)
    if proc.returncode != 0:
        raise AssertionError(f"{command!r} on {name} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def unit_client(name: str, *args: str) -> tuple[int, Any]:
    """Run stateserver-client on a unit host as its software would: (exit code, parsed JSON output or stderr)."""
    proc = ssh_run(name, "stateserver-client " + " ".join(shlex.quote(a) for a in args), timeout=120)
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr


UNIT_CACHE = "/var/lib/stateserver-client/addresses.json"


def unit_cache(name: str) -> dict[str, Any]:
    """The unit client's address cache on a unit host (the address that worked last, the published list)."""
    return json.loads(ssh(name, f"cat {UNIT_CACHE}"))


def main_pid_start_us(name: str) -> int:
    """When mongod's current process started on that host, in µs of CLOCK_MONOTONIC, which every host shares
    (they are containers on one kernel), so the values order restarts across hosts."""
    return int(ssh(name, "systemctl show -p ExecMainStartTimestampMonotonic --value mongod").strip())


def machine_of_host(host: str) -> str | None:
    """The machine a member host:port belongs to, by its tag."""
    return next((machine_of(m) for m in replset_config()["members"] if m["host"] == host), None)


def api_token() -> str:
    return (EPHEMERAL / "secrets" / "api-token").read_text().strip()


def api_mongo_credentials() -> tuple[str, str]:
    """The API server's own MongoDB user (authSource admin) and its password from the secrets directory."""
    return "stateserver-api", (EPHEMERAL / "secrets" / "api-mongo-password").read_text().strip()


def api_tls() -> ssl.SSLContext:
    """What the API's clients verify a server with: the deployment CA, and the address among its names."""
    return ssl.create_default_context(cafile=str(ca_file()))


def api(name: str, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    """One HTTPS request to a machine's API server, verified with the deployment CA (httpx response)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs.setdefault("verify", api_tls())
    return httpx.request(method, f"https://{address(name)}:{API_PORT}{path}", headers=headers, timeout=15, **kwargs)


def wipe_mongod_data(name: str, dbpath: str = "/var/lib/mongodb") -> None:
    """Empty a powered-off host's mongod data directory through its disk as the controller mounts it (the host's
    overlay root stays mounted while it is off), as a replacement machine at the same address would start."""
    host = next(h for h in hosts() if h["name"] == name)
    data = Path(host["dir"]) / "root" / dbpath.lstrip("/")
    if not data.is_dir():
        raise AssertionError(f"{name}: no data directory at {data} (is the host's root mounted?)")
    for entry in data.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def ca_key() -> str:
    """The deployment CA's private key (PEM) from the secrets directory: an AWX credential carries it."""
    return (EPHEMERAL / "secrets" / "ca.key").read_text()


def ssh_key() -> str:
    """The private key every scenario host accepts for root (what an AWX machine credential would hold)."""
    return (EPHEMERAL / "hosts" / "id_ed25519").read_text()


# What the roles write on a state machine, the API server's and mongod's configuration, keyfile and certificates.
MANAGED_PATHS = ("/etc/mongod.conf", "/etc/mongod.keyfile", "/etc/mongod", "/etc/stateserver-api",
                 "/etc/systemd/system/mongod.service", "/etc/systemd/system/stateserver-api.service")


def host_state(name: str) -> str:
    """What a run that changes nothing on a host leaves exactly as it was: when mongod's and the API server's
    current processes started and the modification time of every file in MANAGED_PATHS (nothing of either on a
    host that is not a state machine yet)."""
    paths = " ".join(MANAGED_PATHS)
    return ssh_run(name, "systemctl show -p ExecMainStartTimestampMonotonic --value mongod stateserver-api; "
                         f"find {paths} -printf '%p %T@\\n' 2>/dev/null | sort").stdout
