"""The launcher behaves like mongod on the command line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mongosim.testing import allocate_subnet, using_real_mongod
from pymongo import MongoClient

pytestmark = pytest.mark.skipif(using_real_mongod(), reason="checks the simulator's launcher itself")
MONGOSIM = str(Path(sys.executable).parent / "mongosim")


@pytest.fixture
def addr():
    prefix, lock = allocate_subnet("127.10")
    yield f"{prefix}.1"
    lock.close()


def wait_ping(host: str, port: int, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        c = MongoClient(host, port, directConnection=True, serverSelectionTimeoutMS=300)
        try:
            return c.admin.command("ping")
        except Exception:
            if time.monotonic() > deadline:
                raise
        finally:
            c.close()
        time.sleep(0.05)


def test_version_says_simulator_and_modelled_release():
    out = subprocess.run([MONGOSIM, "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0
    assert "simulator" in out.stdout and "NOT MongoDB" in out.stdout and "7.0" in out.stdout


@pytest.mark.parametrize("argv", [["--bogus"], ["--port"], ["--setParameter", "noSuchParam=1"]])
def test_bad_command_line_fails_clearly(argv, tmp_path):
    out = subprocess.run([MONGOSIM, "--dbpath", str(tmp_path), *argv], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode != 0
    assert "option" in out.stderr.lower() or "setparameter" in out.stderr.lower()


def test_unknown_config_file_key_fails(tmp_path):
    cfg = tmp_path / "mongod.conf"
    cfg.write_text("net:\n  port: 37017\n  frobnicate: true\n")
    out = subprocess.run([MONGOSIM, "--config", str(cfg)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode != 0
    assert "net.frobnicate" in out.stderr


def test_missing_dbpath_fails(tmp_path):
    out = subprocess.run([MONGOSIM, "--dbpath", str(tmp_path / "nope")], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 100
    assert "NonExistentPath" in out.stderr


def test_config_file_fork_pidfile_and_sigterm(tmp_path, addr):
    db = tmp_path / "db"
    db.mkdir()
    cfg = tmp_path / "mongod.conf"
    cfg.write_text(f"""# a mongod config file
net:
  port: 37017
  bindIp: {addr}
replication:
  replSetName: "stateserver"
storage:
  dbPath: {db}
systemLog:
  destination: file
  path: {tmp_path / 'mongod.log'}
  logAppend: true
processManagement:
  timeZoneInfo: /usr/share/zoneinfo
  fork: true
  pidFilePath: {tmp_path / 'mongod.pid'}
setParameter:
  enableTestCommands: 1
""")
    out = subprocess.run([MONGOSIM, "--config", str(cfg)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    pid = int((tmp_path / "mongod.pid").read_text())
    try:
        assert f"forked process: {pid}" in out.stdout
        wait_ping(addr, 37017)
        c = MongoClient(addr, 37017, directConnection=True, serverSelectionTimeoutMS=3000)
        hello = c.admin.command("hello")
        c.close()
        assert hello["isreplicaset"] is True and hello["isWritablePrimary"] is False
        assert hello["maxWireVersion"] == 21
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("SIGTERM did not shut the server down")


def test_fork_requires_logpath(tmp_path):
    out = subprocess.run([MONGOSIM, "--dbpath", str(tmp_path), "--fork"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode != 0 and "--fork" in out.stderr


def test_default_bind_is_loopback_and_flags_work(tmp_path, addr):
    proc = subprocess.Popen([MONGOSIM, "--port", "37017", "--bind_ip", addr, "--dbpath", str(tmp_path),
                             "--logpath", str(tmp_path / "log")])
    try:
        wait_ping(addr, 37017)
        c = MongoClient(addr, 37017, directConnection=True, serverSelectionTimeoutMS=3000)
        opts = c.admin.command("getCmdLineOpts")
        c.close()
        assert opts["parsed"]["net"]["bindIp"] == addr
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_second_process_on_same_dbpath_is_refused(tmp_path, addr):
    proc = subprocess.Popen([MONGOSIM, "--port", "37017", "--bind_ip", addr, "--dbpath", str(tmp_path),
                             "--logpath", str(tmp_path / "log")])
    try:
        wait_ping(addr, 37017)
        out = subprocess.run([MONGOSIM, "--port", "37018", "--bind_ip", addr, "--dbpath", str(tmp_path)],
                             capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 100 and "DBPathInUse" in out.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def test_standalone_without_replset_and_failpoint_needs_test_commands(tmp_path, addr):
    proc = subprocess.Popen([MONGOSIM, "--port", "37017", "--bind_ip", addr, "--dbpath", str(tmp_path),
                             "--logpath", str(tmp_path / "log")])
    try:
        wait_ping(addr, 37017)
        c = MongoClient(addr, 37017, directConnection=True, serverSelectionTimeoutMS=3000)
        try:
            hello = c.admin.command("hello")
            assert hello["isWritablePrimary"] is True and "setName" not in hello
            c.app.t.insert_one({"_id": 1})
            assert c.app.t.find_one() == {"_id": 1}
            from pymongo.errors import OperationFailure
            with pytest.raises(OperationFailure) as e:
                c.admin.command("configureFailPoint", "mongosimPartition", mode="off")
            assert e.value.code == 59
            with pytest.raises(OperationFailure) as e:
                c.admin.command("replSetGetStatus")
            assert e.value.details["codeName"] == "NoReplicationEnabled"
        finally:
            c.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    # data survives a restart of the standalone
    proc = subprocess.Popen([MONGOSIM, "--port", "37017", "--bind_ip", addr, "--dbpath", str(tmp_path),
                             "--logpath", str(tmp_path / "log")])
    try:
        wait_ping(addr, 37017)
        c = MongoClient(addr, 37017, directConnection=True, serverSelectionTimeoutMS=3000)
        assert c.app.t.find_one() == {"_id": 1}
        c.close()
    finally:
        proc.terminate()
        proc.wait(10)
