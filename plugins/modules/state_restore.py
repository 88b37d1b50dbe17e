#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: state_restore
short_description: Restore the control plane's state database from a backup made by state_backup
version_added: 0.3.0
description:
  - Reads a backup directory written by M(stateserver.ha.state_backup) on the host that runs the task, checks its
    C(manifest.json) (format, fields) and every collection file against it (present, sha256, document count)
    B(before writing anything), then writes the documents and indexes to the replica set's primary with write
    concern C(majority) and reads the counts back.
  - Meant for a freshly deployed set. A set where any collection to be restored already holds documents is refused,
    and nothing is written, unless O(force=true), which first deletes those collections' documents.
  - The machine records (C(stateserver.machines)) in the backup describe the machines of the deployment that was
    backed up; a set deployed anew has its own, written by C(ensure-ha.yml). They are therefore left out unless
    O(include_records=true).
  - For whole-cluster backups of large deployments use C(mongodump)/C(mongorestore) or Percona Backup for MongoDB.
author:
  - stateserver.ha developers (@stateserver)
options:
  path:
    description:
      - The backup directory (the one that holds C(manifest.json)).
    type: path
    required: true
  force:
    description:
      - Replace collections that already hold documents (their documents are deleted first, then the backup's
        written). Without it such a set is refused and nothing is written.
    type: bool
    default: false
  include_records:
    description:
      - Restore the machine records too (only right when the machines are the same ones, at the same addresses).
    type: bool
    default: false
extends_documentation_fragment:
  - stateserver.ha.connection
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details:
      - Verifies the backup and reads the target's document counts; refuses as a real run would; writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: none
    details:
      - A second run finds the restored documents and is refused unless O(force=true).
seealso:
  - module: stateserver.ha.state_backup
"""

EXAMPLES = r"""
- name: Restore the newest backup into the freshly deployed set
  stateserver.ha.state_restore:
    seeds: [192.0.2.21, 192.0.2.22, 192.0.2.23]
    login_user: admin
    login_password: "{{ mongod_admin_password }}"
    path: /var/backups/stateserver/stateserver-20261130T054000123456Z
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
collections:
  description: Documents per collection restored (would be restored, in check mode), read back after the writes.
  returned: success
  type: dict
  sample: {"kv": 12, "units": 5}
left_out:
  description:
    - Collections of the backup left out (the machine records unless O(include_records=true)).
    - Not named C(skipped), since Ansible reports a task whose result has a true C(skipped) as skipped.
  returned: success
  type: list
  elements: str
  sample: [machines]
replaced:
  description: Collections that held documents and were emptied first (O(force=true)).
  returned: success
  type: list
  elements: str
  sample: []
manifest:
  description: The backup's manifest.
  returned: when the manifest could be read
  type: dict
  sample: {"format": "stateserver.ha/state-backup/1", "replica_set": "stateserver", "optime": {"ts": [1796017200, 3], "t": 4}}
problems:
  description: What is wrong with the backup (a failed verification; nothing was written).
  returned: on a failed verification
  type: list
  elements: str
  sample: ["stateserver.kv.bson does not match its sha256 in manifest.json (changed or truncated)"]
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.stateserver.ha.plugins.module_utils._args import (
    CONNECTION_REQUIRED_TOGETHER,
    check_connection,
    connection_argument_spec,
)
from ansible_collections.stateserver.ha.plugins.module_utils._backup import (
    DATABASE,
    MANIFEST,
    file_problems,
    manifest_problems,
    occupied,
    restore_collections,
)
from ansible_collections.stateserver.ha.plugins.module_utils._replset import (
    HAS_PYMONGO,
    PYMONGO_IMPORT_ERROR,
    ReplSet,
    ReplSetError,
    exit_without_joining_monitors,
)

try:
    import bson
    import bson.errors
    from bson.raw_bson import RawBSONDocument
    from pymongo import ReadPreference
    from pymongo.errors import PyMongoError
    from pymongo.read_concern import ReadConcern
    from pymongo.write_concern import WriteConcern
except ImportError:
    pass  # HAS_PYMONGO is False; main() reports it

_BATCH = 1000


def load_backup(path: str) -> tuple[dict | None, dict, list[str]]:
    """(manifest, files, problems): the manifest, each listed file's bytes (None when missing), what is wrong."""
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None, {}, [f"{path} holds no {MANIFEST}: is it a backup directory?"]
    except (OSError, ValueError) as exc:
        return None, {}, [f"{MANIFEST} in {path} cannot be read: {exc}"]
    problems = manifest_problems(manifest)
    if problems:
        return manifest, {}, problems
    files = {}
    for entry in manifest["collections"].values():
        try:
            with open(os.path.join(path, entry["file"]), "rb") as f:
                files[entry["file"]] = f.read()
        except FileNotFoundError:
            files[entry["file"]] = None
        except OSError as exc:
            return manifest, {}, [f"{entry['file']} cannot be read: {exc}"]
    return manifest, files, file_problems(manifest, files, bson.decode_all, bson.errors.BSONError)


def counts(db, names: list[str]) -> dict[str, int]:
    return {name: db.get_collection(name, read_concern=ReadConcern("majority"),
                                    read_preference=ReadPreference.PRIMARY).count_documents({})
            for name in names}


def restore(db, manifest: dict, files: dict, names: list[str], replace: list[str]) -> list[str]:
    """Write the backup's documents and indexes (majority write concern). Returns the collections written."""
    written = []
    for name in names:
        coll = db.get_collection(name, write_concern=WriteConcern(w="majority", wtimeout=60000))
        if name in replace:
            coll.delete_many({})
        docs = bson.decode_all(files[manifest["collections"][name]["file"]],
                               bson.CodecOptions(document_class=RawBSONDocument))
        for i in range(0, len(docs), _BATCH):
            coll.insert_many(docs[i:i + _BATCH], ordered=True)
        indexes = manifest["collections"][name].get("indexes") or []
        if indexes:
            db.command("createIndexes", name, indexes=indexes, writeConcern={"w": "majority", "wtimeout": 60000})
        written.append(name)
    return written


def main() -> None:
    exit_without_joining_monitors()
    argument_spec = connection_argument_spec()
    argument_spec.update(
        path={"type": "path", "required": True},
        force={"type": "bool", "default": False},
        include_records={"type": "bool", "default": False},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           required_together=CONNECTION_REQUIRED_TOGETHER)
    params = module.params
    problem = check_connection(params)
    if problem:
        module.fail_json(msg=problem, changed=False)
    if not HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=PYMONGO_IMPORT_ERROR)

    manifest, files, problems = load_backup(params["path"])
    if problems:
        module.fail_json(msg=f"the backup in {params['path']} failed verification, nothing was written: "
                         + "; ".join(problems), changed=False, problems=problems,
                         **({"manifest": manifest} if isinstance(manifest, dict) else {}))
    names = restore_collections(manifest, params["include_records"])
    left_out = sorted(set(manifest["collections"]) - set(names))
    expected = {name: manifest["collections"][name]["count"] for name in names}
    written: list[str] = []
    try:
        with ReplSet(params) as rs:
            if rs.read_view().config is None:
                module.fail_json(msg=f"replica set {rs.set_name!r} is not initiated; deploy it (ensure-ha.yml) "
                                 "before restoring into it", changed=False, manifest=manifest)
            db = rs.client.get_database(DATABASE)
            before = counts(db, names)
            full = occupied(before, names)
            if full and not params["force"]:
                module.fail_json(msg="the replica set already holds data in " + ", ".join(full) + "; nothing was "
                                 "written. Restore into a freshly deployed set, or set force=true to replace those "
                                 "collections", changed=False, manifest=manifest)
            replace = [name for name in names if before.get(name, 0) > 0]
            result = {"left_out": left_out, "replaced": replace, "manifest": manifest}
            if module.check_mode:
                module.exit_json(changed=True, collections=expected, **result)
            written = restore(db, manifest, files, names, replace)
            after = counts(db, names)
    except (ReplSetError, PyMongoError) as exc:
        module.fail_json(msg=f"restoring failed after writing {written or 'nothing'} (a collection in progress may "
                         f"be partly written; re-run with force=true to replace it): {exc}", changed=bool(written),
                         manifest=manifest)
    if after != expected:
        module.fail_json(msg=f"the restored counts {after} differ from the backup's {expected}", changed=True,
                         collections=after, **result)
    module.exit_json(changed=True, collections=after, **result)


if __name__ == "__main__":
    main()
