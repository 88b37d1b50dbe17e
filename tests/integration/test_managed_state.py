"""managed_state_info on real files: one run names what differs (owner, group, mode, content, a missing path), does
not follow a symbolic link, and never returns a checksum. Services are read on the lab hosts (lab/tests/test_rerun.py),
since this machine runs no systemd."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = "ansible_collections.stateserver.ha.plugins.modules.managed_state_info"


def run(tmp_path: Path, args: dict, check_mode: bool = False) -> dict:
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}))
    proc = subprocess.run([sys.executable, "-m", MODULE, str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "build" / "collections")}, check=False)
    return json.loads(proc.stdout)


def test_one_run_names_each_difference_and_hides_the_checksums(tmp_path: Path) -> None:
    user, group = pwd.getpwuid(os.getuid())[0], grp.getgrgid(os.getgid())[0]
    conf = tmp_path / "mongod.conf"
    conf.write_text("net:\n  port: 37017\n")
    conf.chmod(0o640)
    secret = tmp_path / "keyfile"
    secret.write_text("k" * 756)
    secret.chmod(0o400)
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    data.chmod(0o750)
    link = tmp_path / "mongod"
    link.symlink_to(tmp_path / "nowhere")  # exists as a link, though its target does not
    want = [
        {"path": str(conf), "owner": user, "group": group, "mode": "0640",
         "checksum": hashlib.sha1(conf.read_bytes()).hexdigest()},
        {"path": str(secret), "owner": user, "mode": "0400", "checksum": hashlib.sha1(b"other").hexdigest()},
        {"path": str(data), "owner": user, "group": group, "mode": "0700"},
        {"path": str(link)},
        {"path": str(tmp_path / "missing.service"), "mode": "0644"},
    ]
    result = run(tmp_path, {"files": want})
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["drift"] == [str(secret), str(data), str(tmp_path / "missing.service")]
    assert result["files"][str(conf)] == {"owner": user, "group": group, "mode": "0640", "checksum_matches": True}
    assert result["files"][str(secret)]["checksum_matches"] is False
    assert result["files"][str(tmp_path / "missing.service")] is None
    assert hashlib.sha1(b"other").hexdigest() not in json.dumps(result)  # never printed, not even as an argument

    # Mended, the host matches; check mode reads the same.
    data.chmod(0o700)
    want[1]["checksum"] = hashlib.sha1(secret.read_bytes()).hexdigest()
    want.pop()
    assert run(tmp_path, {"files": want}, check_mode=True)["drift"] == []
