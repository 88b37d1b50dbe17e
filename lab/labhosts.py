#!/usr/bin/env python3
"""Local hosts for the lab and the molecule scenarios: booted systemd machines reached over SSH.

Each host is a `systemd-nspawn -b` container in a network namespace of its own, on an internal bridge with no
route to anything but its peers and the controller. Its root is an overlay of one cached Debian image
(debootstrap) and a per-host upper directory, so a stopped host keeps its files and starts again like a
rebooted machine. Everything made is recorded in STATE/hosts.json and removed by `down` by those records.

    labhosts.py up    --state DIR --prefix P --subnet 10.177.0 (--count 7 | --names m1,m2,u1) [--wheels]
    labhosts.py stop  --state DIR NAME...       (power off: kill the machine, keep its disk)
    labhosts.py start --state DIR NAME...
    labhosts.py down  --state DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = ROOT / "build" / "lab-image"
WHEEL_CACHE = ROOT / "build" / "lab-wheels"
IMAGE_PACKAGES = [
    "python3", "python3-venv", "iproute2", "openssh-server", "systemd", "systemd-sysv", "dbus", "procps",
    "sudo", "iputils-ping", "netbase",
    # ansible.builtin.pip (used by the api_server role) imports packaging on the host.
    "python3-packaging",
    # The binary and package install methods: apt's Python binding for ansible.builtin.apt, and pymongo for
    # stateserver.ha.mongod_member, which the mongod role runs on the host (no package mirror to fetch them from).
    "python3-apt", "python3-pymongo",
    # The repository install method fetches its signing key with get_url.
    "ca-certificates",
]
# Bump when the image changes in a way the package list does not show.
IMAGE_REVISION = 2
HOST_TOOLS = {
    "debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "ssh": "openssh-client",
    "ssh-keygen": "openssh-client", "ip": "iproute2",
}
# A bound, not a wait: hosts answer in seconds on an idle machine, but a host booting beside several loaded test
# streams on 2 cores once took over 90 s.
BOOT_TIMEOUT = 240.0


def run(*cmd: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, check=check, text=True, stdout=out, stderr=out)


def log(msg: str) -> None:
    print(f"lab: {msg}", flush=True)


def ensure_host_tools(tools: dict[str, str] | None = None) -> None:
    """Install the Debian packages of the controller tools that are missing (tool name -> package)."""
    missing = sorted({pkg for tool, pkg in (tools or HOST_TOOLS).items() if shutil.which(tool) is None})
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def debian_mirror() -> str:
    """The mirror this machine's apt uses, so the image comes from the same place."""
    for source in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if not source.exists():
            continue
        for line in source.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1:
                return words[1]
            if words[:1] == ["deb"]:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def ensure_image() -> Path:
    """Build the Debian image once; rebuilt only when the package list changes."""
    rootfs = IMAGE_DIR / "rootfs"
    stamp = IMAGE_DIR / "packages"
    wanted = ",".join(IMAGE_PACKAGES)
    if rootfs.is_dir() and stamp.exists() and stamp.read_text().strip() == f"{wanted};{IMAGE_REVISION}":
        return rootfs
    if rootfs.is_dir() and f"lowerdir={rootfs}," in Path("/proc/mounts").read_text():
        log("the host image is out of date, but running hosts use it; rebuilt once they are down")
        return rootfs
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = IMAGE_DIR / "rootfs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log("building the Debian image with debootstrap (once; cached in build/lab-image)")
    run("debootstrap", "--variant=minbase", f"--include={wanted}", "bookworm", str(tmp), debian_mirror(), quiet=True)
    # Host keys and machine id are made per host; an image copy must not share them.
    for key in (tmp / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "etc" / "machine-id").write_text("")
    # The hosts have no route to a package mirror: apt on them knows only the repositories a role adds.
    (tmp / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    tmp.rename(rootfs)
    stamp.write_text(f"{wanted};{IMAGE_REVISION}\n")
    return rootfs


def source_digest(source: Path) -> str:
    """A digest of a package's source files (not its tests or build output)."""
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        parts = set(path.relative_to(source).parts)
        if path.is_file() and not parts & {"build", "tests", "__pycache__"} and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_wheels(state: Path) -> dict[str, Path]:
    """Wheels the hosts install with pip --no-index: mongosim (simulator install method) and, when the tree has
    it, the API server, each from this tree plus its dependencies at the pinned versions."""
    sources = {"mongosim": ROOT / "tests" / "mongosim", "api": ROOT / "apiserver"}
    built = {}
    for name, source in sources.items():
        if not (source / "pyproject.toml").exists():
            continue
        wheels = state / "wheels" / name
        # Wheels are not byte-reproducible: rebuilding unchanged sources would make every host reinstall and
        # restart its service on the next run.
        stamp = wheels / ".source-digest"
        digest = source_digest(source)
        if stamp.exists() and stamp.read_text() == digest:
            built[name] = wheels
            continue
        cached = cached_wheels(name, source, digest)
        shutil.rmtree(wheels, ignore_errors=True)
        shutil.copytree(cached, wheels)
        stamp.write_text(digest)
        built[name] = wheels
    return built


def cached_wheels(name: str, source: Path, digest: str) -> Path:
    """One wheel set per source digest in build/lab-wheels, shared by every scenario and lab run of this tree:
    building and downloading costs about 20 s of CPU, which each of the many host sets would otherwise pay."""
    cache = WHEEL_CACHE / f"{name}-{digest[:16]}"
    if cache.is_dir():
        return cache
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    constraints = ROOT / "requirements" / "constraints.txt"
    tmp = WHEEL_CACHE / f".{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp), str(source)], check=True)
    own = next(tmp.glob("*.whl"))
    subprocess.run([*pip, "download", "--only-binary=:all:", "-c", str(constraints), "-d", str(tmp), str(own)],
                   check=True)
    # Renaming into place is atomic: a scenario building the same set at the same time keeps its own copy.
    try:
        tmp.rename(cache)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in WHEEL_CACHE.glob(f"{name}-*"):
        if old != cache:
            shutil.rmtree(old, ignore_errors=True)
    return cache


def load(state: Path) -> dict:
    path = state / "hosts.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save(state: Path, data: dict) -> None:
    tmp = state / "hosts.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.rename(state / "hosts.json")


def ensure_controller_key(state: Path) -> Path:
    key = state / "id_ed25519"
    if not key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stateserver-lab", "-f", str(key))
    return key


def ensure_bridge(data: dict) -> None:
    bridge = data["bridge"]
    if run("ip", "link", "show", bridge, check=False, quiet=True).returncode != 0:
        run("ip", "link", "add", bridge, "type", "bridge")
        run("ip", "addr", "add", f"{data['subnet']}.1/24", "dev", bridge)
    run("ip", "link", "set", bridge, "up")
    # The controller talks to the hosts, but nothing is routed from them to anywhere else.
    Path(f"/proc/sys/net/ipv4/conf/{bridge}/forwarding").write_text("0\n")


def seed_upper(host: dict, hosts: list[dict], pubkey: str) -> None:
    """Files a host has before its first boot: name, peers, resolver, SSH keys, machine id."""
    upper = Path(host["dir"]) / "upper"
    etc = upper / "etc"
    (etc / "ssh").mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text(host["name"] + "\n")
    peers = "".join(f"{h['ip']} {h['name']}\n" for h in hosts)
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host['name']}\n{peers}")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    if not (etc / "machine-id").exists():
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    if not (etc / "ssh" / "ssh_host_ed25519_key").exists():
        run("ssh-keygen", "-q", "-A", "-f", str(upper))
    ssh_dir = upper / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(upper / "root", 0o700)
    os.chmod(ssh_dir, 0o700)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    os.chmod(ssh_dir / "authorized_keys", 0o600)


def is_running(host: dict) -> bool:
    pid = host.get("pid")
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"systemd-nspawn" in cmdline and host["dir"].encode() in cmdline


def start_host(host: dict, data: dict, rootfs: Path) -> None:
    if is_running(host):
        return
    hdir = Path(host["dir"])
    for sub in ("upper", "work", "root"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    if run("mountpoint", "-q", str(hdir / "root"), check=False).returncode != 0:
        run("mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={rootfs},upperdir={hdir / 'upper'},workdir={hdir / 'work'}", str(hdir / "root"))
    netns = host["netns"]
    if not Path(f"/run/netns/{netns}").exists():
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", host["veth"], "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", host["veth"], "master", data["bridge"], "up")
        run("ip", "-n", netns, "addr", "add", f"{host['ip']}/24", "dev", "eth0")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
    logf = open(hdir / "console.log", "ab")  # noqa: SIM115 - handed to the machine for its lifetime
    proc = subprocess.Popen(
        ["systemd-nspawn", "-q", "-b", "-D", str(hdir / "root"), f"--network-namespace-path=/run/netns/{netns}",
         "--register=no", "--keep-unit", f"--machine={host['name']}", "--console=passive",
         "--resolv-conf=off", "--timezone=off", "--link-journal=no"],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    host["pid"] = proc.pid


def wait_ssh(hosts: list[dict]) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    pending = {h["name"]: h for h in hosts}
    while pending and time.monotonic() < deadline:
        for name, host in list(pending.items()):
            try:
                with socket.create_connection((host["ip"], 22), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH"):
                        del pending[name]
            except OSError:
                pass
        if pending:
            time.sleep(0.5)
    if pending:
        raise SystemExit(f"lab: hosts did not answer on SSH within {BOOT_TIMEOUT:.0f}s: {', '.join(pending)} "
                         f"(see their console.log under the state directory)")


def stop_host(host: dict, timeout: float = 20.0) -> None:
    """Power a machine off: SIGTERM asks nspawn for a clean shutdown, SIGKILL after the timeout."""
    if is_running(host):
        pid = host["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while is_running(host) and time.monotonic() < deadline:
            time.sleep(0.2)
        if is_running(host):
            os.kill(pid, signal.SIGKILL)
            while is_running(host):
                time.sleep(0.1)
    host["pid"] = None


def write_inventory(state: Path, data: dict, key: Path) -> Path:
    """Group state_machines (the pool of state machine hosts) and, when there are unit hosts, group units."""
    group_vars = {
        "state_machines": [
            "        mongod_install_method: simulator",
            f"        mongod_simulator_wheel_dir: {state / 'wheels' / 'mongosim'}",
            f"        api_server_wheel_dir: {state / 'wheels' / 'api'}",
            # The machine's hard open-files limit is far below MongoDB's recommended 64000.
            "        mongod_limit_nofile: 8192",
        ],
        "units": [f"        unit_wheel_dir: {state / 'wheels' / 'api'}"],
    }
    lines = [
        "---", "all:", "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {key}",
        "    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "    ansible_python_interpreter: /usr/bin/python3",
        "  children:",
    ]
    for group, gvars in group_vars.items():
        members = [h for h in data["hosts"] if h.get("group", "state_machines") == group]
        if not members:
            continue
        lines += [f"    {group}:", "      hosts:"]
        for h in members:
            lines += [f"        {h['name']}:", f"          ansible_host: {h['ip']}"]
        lines += ["      vars:", *gvars]
    path = state / "inventory.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_instance_config(path: Path, data: dict, key: Path) -> None:
    """The instance list molecule's delegated driver builds its inventory from."""
    instances = [{"instance": h["name"], "address": h["ip"], "user": "root", "port": 22, "identity_file": str(key)}
                 for h in data["hosts"]]
    path.write_text("# Molecule managed\n" + json.dumps(instances, indent=2) + "\n")
    os.chmod(path, 0o600)


def cmd_up(args: argparse.Namespace) -> None:
    state: Path = args.state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    ensure_host_tools()
    rootfs = ensure_image()
    data = load(state) or {"prefix": args.prefix, "subnet": args.subnet, "bridge": f"{args.prefix}-br",
                           "hosts": []}
    if data["prefix"] != args.prefix or data["subnet"] != args.subnet:
        raise SystemExit(f"lab: {state} already holds hosts {data['prefix']} on {data['subnet']}.0/24; "
                         "take them down first")
    names = args.names.split(",") if args.names else [f"{args.name}{i}" for i in range(1, args.count + 1)]
    units = [f"unit{i}" for i in range(1, args.units + 1)]
    names += units
    bad = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9-]{0,11}", n)]
    if bad or len(set(names)) != len(names) or not 0 < len(names) < 240:
        raise SystemExit(f"lab: host names must be distinct, 1-12 of [a-z0-9-] starting with a letter: {names}")
    for i in range(len(data["hosts"]) + 1, len(names) + 1):
        name = names[i - 1]
        data["hosts"].append({"name": name, "ip": f"{args.subnet}.{10 + i}", "netns": f"{args.prefix}-{name}",
                              "veth": f"{args.prefix}-v{i}", "dir": str(state / "hosts" / name), "pid": None,
                              "group": "units" if name in units else "state_machines"})
    save(state, data)
    key = ensure_controller_key(state)
    pubkey = (state / "id_ed25519.pub").read_text()
    ensure_bridge(data)
    for host in data["hosts"]:
        seed_upper(host, data["hosts"], pubkey)
        start_host(host, data, rootfs)
        save(state, data)
    if args.wheels:
        build_wheels(state)
    wait_ssh(data["hosts"])
    inventory = write_inventory(state, data, key)
    if args.instance_config:
        write_instance_config(args.instance_config, data, key)
    log(f"{len(data['hosts'])} hosts up on {data['bridge']} ({data['subnet']}.0/24); inventory {inventory}")


def select(data: dict, names: list[str]) -> list[dict]:
    known = {h["name"]: h for h in data.get("hosts", [])}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"lab: no such host: {', '.join(unknown)}")
    return [known[n] for n in names]


def cmd_stop(args: argparse.Namespace) -> None:
    state = args.state.resolve()
    data = load(state)
    for host in select(data, args.names):
        stop_host(host)
        save(state, data)


def cmd_start(args: argparse.Namespace) -> None:
    state = args.state.resolve()
    data = load(state)
    hosts = select(data, args.names)
    for host in hosts:
        start_host(host, data, ensure_image())
        save(state, data)
    wait_ssh(hosts)


def cmd_down(args: argparse.Namespace) -> None:
    state = args.state.resolve()
    data = load(state)
    for host in data.get("hosts", []):
        stop_host(host)
        root = Path(host["dir"]) / "root"
        if run("mountpoint", "-q", str(root), check=False).returncode == 0:
            run("umount", str(root))
        run("ip", "netns", "del", host["netns"], check=False, quiet=True)
        run("ip", "link", "del", host["veth"], check=False, quiet=True)
    if data.get("bridge"):
        run("ip", "link", "del", data["bridge"], check=False, quiet=True)
    if state.exists() and (not data or all(not is_running(h) for h in data.get("hosts", []))):
        shutil.rmtree(state)
    log(f"removed {len(data.get('hosts', []))} hosts and {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up")
    up.add_argument("--prefix", required=True, help="prefix of namespace and link names (short)")
    up.add_argument("--subnet", required=True, help="first three octets, e.g. 10.177.0")
    how_many = up.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--count", type=int, help="start COUNT hosts named NAME1..NAMEn")
    how_many.add_argument("--names", help="start one host per comma-separated name (molecule's platform names)")
    up.add_argument("--units", type=int, default=0, help="also start unit hosts unit1..unitN (inventory group units)")
    up.add_argument("--name", default="sm", help="host names are NAME1..NAMEn")
    up.add_argument("--wheels", action="store_true", help="build the simulator wheels into STATE/wheels")
    up.add_argument("--instance-config", type=Path, help="also write molecule's instance config here")
    for name in ("stop", "start"):
        p = sub.add_parser(name)
        p.add_argument("names", nargs="+")
    sub.add_parser("down")
    for p in sub.choices.values():
        p.add_argument("--state", type=Path, required=True, help="directory holding this set of hosts' records")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("lab: must run as root (namespaces, mounts, bridges)")
    {"up": cmd_up, "stop": cmd_stop, "start": cmd_start, "down": cmd_down}[args.command](args)


if __name__ == "__main__":
    main()
