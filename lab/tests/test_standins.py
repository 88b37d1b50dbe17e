"""The stand-in artifacts for the binary, package and repository install methods have MongoDB's shapes, the
executable serves as a replica-set member when run by the system's python3 alone (as on a lab host), and apt
accepts the signed repository that `serve` publishes on loopback.
"""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

LAB = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(LAB))

import labhosts
import standins

# standins.py installs dpkg and gpg with apt-get when they are missing; apt-get itself is what it needs.
pytestmark = pytest.mark.skipif(not Path("/usr/bin/apt-get").exists(), reason="needs a Debian controller")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labhosts.build_wheels(tmp_path_factory.mktemp("standins"))["mongosim"]


def build(wheels: Path, out: Path, number: int) -> dict[str, Path]:
    subprocess.run([sys.executable, str(LAB / "standins.py"), "build", f"--wheels={wheels}", f"--out={out}",
                    f"--build={number}"], check=True, capture_output=True)
    return {"executable": out / "mongod", "tarball": out / "mongodb-standin.tgz", "deb": out / "mongodb-standin.deb"}


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, text=True,
                          capture_output=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tarball_has_mongodbs_layout_and_the_deb_installs_usr_bin_mongod(wheels: Path, tmp_path: Path) -> None:
    built = build(wheels, tmp_path, 1)
    executable = built["executable"].read_bytes()
    with tarfile.open(built["tarball"]) as tar:
        member = tar.getmember(f"{standins.TOP_DIR}/bin/mongod")
        assert member.mode == 0o755
        assert tar.extractfile(member).read() == executable
        assert {m.name.split("/")[0] for m in tar.getmembers()} == {standins.TOP_DIR}
    assert deb_field(built["deb"], "Package") == standins.PACKAGE
    assert deb_field(built["deb"], "Version") == "0.1.1"
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(built["deb"])], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(listing)) as tar:
        member = tar.getmember("./usr/bin/mongod")
        assert (member.mode, member.uname) == (0o755, "root")
        assert tar.extractfile(member).read() == executable


def test_a_new_build_is_a_different_binary_and_a_newer_package(wheels: Path, tmp_path: Path) -> None:
    first = build(wheels, tmp_path / "one", 1)
    second = build(wheels, tmp_path / "two", 2)
    digest = [hashlib.sha256(b["executable"].read_bytes()).hexdigest() for b in (first, second)]
    assert digest[0] != digest[1]
    assert subprocess.run(["dpkg", "--compare-versions", deb_field(second["deb"], "Version"), "gt",
                           deb_field(first["deb"], "Version")], check=False).returncode == 0


def test_executable_serves_a_one_member_set_with_the_system_python_only(wheels: Path, tmp_path: Path) -> None:
    built = build(wheels, tmp_path / "out", 1)
    port, dbpath = free_port(), tmp_path / "db"
    dbpath.mkdir()
    # No virtualenv on PATH: the host has only its own python3, as a lab host does.
    proc = subprocess.Popen([str(built["executable"]), "--replSet", "standin", "--port", str(port), "--bind_ip",
                             "127.0.0.1", "--dbpath", str(dbpath), "--logpath", str(tmp_path / "log")],
                            env={"PATH": "/usr/bin:/bin"})
    try:
        with MongoClient("127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=20000) as c:
            c.admin.command("replSetInitiate", {"_id": "standin", "members": [{"_id": 0,
                                                                                "host": f"127.0.0.1:{port}"}]})
            deadline = time.monotonic() + 30
            while not c.admin.command("hello").get("isWritablePrimary"):
                assert time.monotonic() < deadline, "the stand-in never became primary"
                time.sleep(0.2)
            c.probe.docs.insert_one({"_id": 1, "from": "stand-in"})
            assert c.probe.docs.find_one({"_id": 1})["from"] == "stand-in"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_apt_accepts_the_signed_repository_and_sees_every_build(wheels: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(wheels, out, 1)
    build(wheels, out, 2)
    port = free_port()
    subprocess.run([sys.executable, str(LAB / "standins.py"), "serve", f"--out={out}", "--address=127.0.0.1",
                    f"--port={port}"], check=True)
    pid = int((out / "repo-server.pid").read_text())
    try:
        # apt with its own state and only this source: the machine's configuration is not touched.
        state = tmp_path / "apt"
        for sub in ("lists/partial", "cache/archives/partial"):
            (state / sub).mkdir(parents=True)
        (state / "sources.list").write_text(
            f"deb [signed-by={out / 'repo' / 'server-7.0.asc'}] http://127.0.0.1:{port}/apt/debian "
            f"{standins.SUITE}/mongodb-org/{standins.SERIES} {standins.COMPONENT}\n")
        options = [f"-oDir::Etc::sourcelist={state / 'sources.list'}", "-oDir::Etc::sourceparts=-",
                   f"-oDir::State::Lists={state / 'lists'}", f"-oDir::Cache={state / 'cache'}",
                   "-oAPT::Sandbox::User=root"]  # the test's files belong to root, not to _apt
        update = subprocess.run(["apt-get", *options, "update"], check=False, text=True, capture_output=True)
        assert update.returncode == 0 and "W:" not in update.stderr, update.stdout + update.stderr
        madison = subprocess.run(["apt-cache", *options, "madison", standins.REPO_PACKAGE], check=True, text=True,
                                 capture_output=True).stdout
        assert sorted(line.split("|")[1].strip() for line in madison.splitlines()) == ["0.1.1", "0.1.2"]
    finally:
        subprocess.run([sys.executable, str(LAB / "standins.py"), "stop", f"--out={out}"], check=True)
    assert not Path(f"/proc/{pid}").exists()


def test_executable_serves_tls_with_the_mongod_roles_net_tls_keys(wheels: Path, tmp_path: Path) -> None:
    # The keys roles/mongod/templates/mongod.conf.j2 writes with mongod_tls (test_mongod_tls.py checks the render).
    sys.path.insert(0, str(LAB.parent / "tests" / "mongosim"))
    from mongosim.certs import make_ca

    executable = standins.build_executable(wheels, tmp_path, 1)
    ca = make_ca(tmp_path / "ca")
    pem = ca.issue("standin", ["127.0.0.1"])
    port, dbpath = free_port(), tmp_path / "db"
    dbpath.mkdir()
    conf = tmp_path / "mongod.conf"
    conf.write_text(f"""net:
  port: {port}
  bindIp: 127.0.0.1
  tls:
    mode: requireTLS
    certificateKeyFile: {pem}
    CAFile: {ca.path}
    allowConnectionsWithoutCertificates: true
storage:
  dbPath: {dbpath}
replication:
  replSetName: standin
systemLog:
  destination: file
  path: {tmp_path / "log"}
""")
    proc = subprocess.Popen([str(executable), "--config", str(conf)], env={"PATH": "/usr/bin:/bin"})
    try:
        with MongoClient("127.0.0.1", port, directConnection=True, tls=True, tlsCAFile=ca.path,
                         serverSelectionTimeoutMS=20000) as c:
            assert c.admin.command("hello")["ok"] == 1
        # A plain client is refused: requireTLS.
        with (MongoClient("127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=1500) as plain,
              pytest.raises(PyMongoError)):
            plain.admin.command("hello")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
