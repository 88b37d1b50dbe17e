#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: state_backup
short_description: Copy the control plane's state database, as of one point in time, to BSON files and a manifest
version_added: 0.3.0
description:
  - "Reads every collection of the C(stateserver) database (the API server's units and key-value store and the
    collection's machine records) from a healthy SECONDARY and writes it to a new directory under O(dest) on the
    host that runs the task (use C(delegate_to: localhost) and C(run_once))."
  - "The copy is consistent: the module notes the source member's majority-committed optime first and reads every
    collection at that one timestamp (read concern C(snapshot) with C(atClusterTime), MongoDB 5.0 or later). It
    therefore holds only majority-committed writes, all of them up to that optime and none after it."
  - "It holds every write acknowledged with write concern C(majority) before the run started: a secondary learns
    the majority commit point a little after the primary, so the module first waits (up to 30 seconds) until the
    source's majority-committed optime reaches the one the primary reported when the run started."
  - The directory, C(stateserver-<UTC time>), holds one C(stateserver.<collection>.bson) file per collection
    (documents one after another, as C(mongodump) writes them) and C(manifest.json) naming the replica set and its
    id, the config version, the source member, the optime, and per collection the document count, sha256 and
    indexes. It is written under a hidden temporary name and renamed when complete, so an interrupted run leaves
    no directory that looks like a backup.
  - After a backup, only the newest O(retain) backups in O(dest) are kept; older C(stateserver-*) directories are
    deleted. Nothing else in O(dest) is touched.
  - This is a copy of the control plane's own small database. For whole-cluster backups of large deployments use
    C(mongodump) or Percona Backup for MongoDB.
author:
  - stateserver.ha developers (@stateserver)
options:
  dest:
    description:
      - Directory on the host that runs the task that holds the backups. Created (mode 0700) when missing.
    type: path
    required: true
  retain:
    description:
      - How many backups to keep in O(dest), this one included. At least 1.
    type: int
    default: 7
  allow_primary:
    description:
      - Read from the primary when no SECONDARY is healthy (a one-member set, or a set that lost its
        secondaries). Off by default so a backup does not add load to the primary.
    type: bool
    default: false
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the database as a real run does and reports what it would write and delete, but writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - Every run writes a new backup.
requirements:
  - The members run MongoDB 5.0 or later (snapshot reads outside transactions).
seealso:
  - module: stateserver.ha.state_restore
"""

EXAMPLES = r"""
- name: Back up the state database to the controller, keeping 14 backups
  stateserver.ha.state_backup:
    seeds: [192.0.2.11, 192.0.2.12, 192.0.2.13]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
    dest: /var/backups/stateserver
    retain: 14
  delegate_to: localhost
  run_once: true
  register: backup

- name: Say where it went
  ansible.builtin.debug:
    msg: "{{ backup.path }}: {{ backup.collections }} at {{ backup.optime }}"
"""

RETURN = r"""
path:
  description: The backup directory (in check mode, the one that would be written).
  returned: success
  type: str
  sample: /var/backups/stateserver/stateserver-20261130T054000123456Z
source:
  description: The member the documents were read from.
  returned: success
  type: str
  sample: 192.0.2.12:37017
optime:
  description: The majority-committed optime the copy was read at (C(ts) as [seconds, increment], C(t) the term).
  returned: success
  type: dict
  sample: {"ts": [1796017200, 3], "t": 4}
collections:
  description: Documents copied per collection.
  returned: success
  type: dict
  sample: {"kv": 12, "machines": 3, "units": 5}
manifest:
  description: The manifest written as C(manifest.json).
  returned: success
  type: dict
  sample: {"format": "stateserver.ha/state-backup/1", "replica_set": "stateserver", "config_version": 7}
kept:
  description: Backup directory names kept in O(dest), newest first.
  returned: success
  type: list
  elements: str
  sample: [stateserver-20261130T054000123456Z]
removed:
  description: Backup directory names deleted by the retention (would be deleted, in check mode).
  returned: success
  type: list
  elements: str
  sample: []
"""

import datetime
import json
import os
import shutil
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._backup import (
    DATABASE,
    MANIFEST,
    SourceError,
    backup_name,
    build_manifest,
    choose_source,
    file_name,
    majority_point,
    reached,
    retention,
)
from ansible_collections.stateserver.ha.plugins.module_utils._converge import Deadline
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    NoSeedAnswered,
    ReplSet,
    ReplSetError,
    exit_without_joining_monitors,
)

try:
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument
    from pymongo.errors import PyMongoError
except ImportError:
    pass  # HAS_PYMONGO is False; main() reports it

# How long the source may take to learn the primary's majority commit point (normally one heartbeat or oplog batch).
CATCH_UP_SECONDS = 30.0


def read_snapshot(params: dict, allow_primary: bool) -> dict:
    """Read the whole database from one member at its majority-committed optime. Raises ReplSetError/SourceError."""
    with ReplSet(params) as rs:
        view = rs.read_view()
        if view.config is None:
            raise ReplSetError(f"replica set {rs.set_name!r} is not initiated: there is nothing to back up")
        source = choose_source(view.status, allow_primary)
        # The status comes from the primary: its majority point covers every write acknowledged so far.
        target = majority_point(view.status)
        try:
            with rs.direct(source, auth=True) as client:
                return _read(client, source, view.config, allow_primary, target)
        except PyMongoError as exc:
            raise ReplSetError(f"reading the backup from {source} failed: {exc}") from exc


def _caught_up_status(client, source: str, allow_primary: bool, target: dict) -> dict:
    """The source's status once its majority point has reached `target`. Raises SourceError past the deadline."""
    deadline = Deadline(CATCH_UP_SECONDS)
    while True:
        status = client.admin.command("replSetGetStatus")
        if status.get("myState") != 2 and not (allow_primary and status.get("myState") == 1):
            raise SourceError(f"{source} is {status.get('myState')} now, not a SECONDARY; run the backup again")
        optime = majority_point(status)
        if reached(optime, target):
            return status
        if deadline.expired():
            raise SourceError(f"{source}'s majority-committed optime {optime} did not reach the primary's {target} "
                              f"within {CATCH_UP_SECONDS:g}s; is it lagging? Run the backup again")
        deadline.pause(0.05)


def _read(client, source: str, config: dict, allow_primary: bool, target: dict) -> dict:
    status = _caught_up_status(client, source, allow_primary, target)
    optime = majority_point(status)
    db = client.get_database(DATABASE)
    names = sorted(c["name"] for c in client[DATABASE].list_collections(filter={"type": "collection"})
                   if not c["name"].startswith("system."))
    files, counts, indexes = {}, {}, {}
    for name in names:
        docs = _find_at(db, name, optime["ts"])
        files[name] = b"".join(d.raw for d in docs)
        counts[name] = len(docs)
        indexes[name] = [_index_spec(ix) for ix in client[DATABASE][name].list_indexes() if ix["name"] != "_id_"]
    return {"source": source, "files": files, "counts": counts, "indexes": indexes,
            "optime": {"ts": [optime["ts"].time, optime["ts"].inc], "t": int(optime["t"])},
            "set_name": config["_id"], "config_version": int(config.get("version", 0)),
            "set_id": str((config.get("settings") or {}).get("replicaSetId", ""))}


def _find_at(db, name: str, ts) -> list:
    """Every document of `name` as of cluster time `ts` (find + getMore with one snapshot read concern)."""
    # Documents are copied as the server's bytes: no decode/encode round trip can change a type or a key order.
    raw = CodecOptions(document_class=RawBSONDocument)
    reply = db.command("find", name, readConcern={"level": "snapshot", "atClusterTime": ts}, batchSize=1000,
                       maxTimeMS=60000, codec_options=raw)
    cursor = reply["cursor"]
    docs = list(cursor["firstBatch"])
    while cursor["id"]:
        cursor = db.command("getMore", cursor["id"], collection=name, batchSize=1000, codec_options=raw)["cursor"]
        docs.extend(cursor["nextBatch"])
    return docs


def _index_spec(ix) -> dict:
    # What createIndexes needs again; "v" and "ns" belong to the server that built it.
    return {k: (dict(v) if k == "key" else v) for k, v in ix.items() if k not in ("v", "ns")}


def write_backup(dest: str, name: str, manifest: dict, files: dict) -> str:
    """Write the backup under a temporary name in `dest`, then rename it: a backup directory is complete or absent."""
    os.makedirs(dest, mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=dest)
    try:
        for collection, data in files.items():
            with open(os.path.join(tmp, file_name(collection)), "wb") as f:
                f.write(data)
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        path = os.path.join(dest, name)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def existing_backups(dest: str) -> list[str]:
    """Backup directories in `dest` that are complete (they hold a manifest)."""
    if not os.path.isdir(dest):
        return []
    return [n for n in os.listdir(dest) if os.path.isfile(os.path.join(dest, n, MANIFEST))]


def main() -> None:
    exit_without_joining_monitors()
    argument_spec = connection_argument_spec()
    argument_spec.update(
        dest={"type": "path", "required": True},
        retain={"type": "int", "default": 7},
        allow_primary={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    params = module.params
    problem = check_connection(params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    if params["retain"] < 1:
        module.fail_json(msg=f"retain must be at least 1 (the backup being written counts), got {params['retain']}",
                         changed=False)
    if os.path.exists(params["dest"]) and not os.path.isdir(params["dest"]):
        module.fail_json(msg=f"dest {params['dest']} exists and is not a directory", changed=False)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)

    try:
        copy = read_snapshot(params, params["allow_primary"])
    except NoSeedAnswered as exc:
        module.fail_json(msg=str(exc), changed=False)
    except (ReplSetError, SourceError) as exc:
        module.fail_json(msg=f"nothing was written: {exc}", changed=False)

    created = datetime.datetime.now(datetime.timezone.utc)  # noqa: UP017 (targets may run 3.8+)
    name = backup_name(created)
    manifest = build_manifest(set_name=copy["set_name"], set_id=copy["set_id"],
                              config_version=copy["config_version"], source=copy["source"], optime=copy["optime"],
                              created=created, files=copy["files"], counts=copy["counts"], indexes=copy["indexes"])
    kept, removed = retention(existing_backups(params["dest"]), params["retain"], new=name)
    path = os.path.join(params["dest"], name)
    result = {"path": path, "source": copy["source"], "optime": copy["optime"], "collections": copy["counts"],
              "manifest": manifest, "kept": kept, "removed": removed}
    if not module.check_mode:
        try:
            write_backup(params["dest"], name, manifest, copy["files"])
        except OSError as exc:
            module.fail_json(msg=f"writing the backup to {path} failed, nothing was kept: {exc}", changed=False,
                             exception=traceback.format_exc())
        done = []
        try:
            for old in removed:
                shutil.rmtree(os.path.join(params["dest"], old))
                done.append(old)
        except OSError as exc:
            module.fail_json(msg=f"the backup {path} is written, but removing old backup {old} failed: {exc}",
                             changed=True, **{**result, "removed": done})
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
