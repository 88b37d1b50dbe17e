#!/usr/bin/python
# ruff: noqa: EXE001 (ansible-test requires module files with a shebang to be non-executable)
# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: managed_state_info
short_description: Name what differs between this host and the files and services a role would make
version_added: 0.3.0
description:
  - Reads each path in O(files) (without following a symbolic link) and the state of each service in O(services),
    and names every difference in RV(drift), in one module run. Changes nothing.
  - A path differs when nothing is there, or when its owner, group, mode or (for a file) the SHA-1 of its content is
    not the one asked; an option left out is not compared. A service differs unless it is both enabled and active.
  - The C(state_machine) role uses it to leave a machine that already matches alone, with this one read.
author:
  - stateserver.ha developers (@stateserver)
options:
  files:
    description: The files and directories to compare, as the role would make them.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path on the host.
        type: path
        required: true
      owner:
        description: The owner's user name.
        type: str
      group:
        description: The group's name.
        type: str
      mode:
        description: The permission bits as four octal digits, for example V(0640).
        type: str
      checksum:
        description: SHA-1 (hex) of the content of a regular file; never printed, it may be a secret's.
        type: str
  services:
    description: systemd services that must be enabled and active (C(mongod), or a full unit name).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - stateserver.ha.attributes
attributes:
  check_mode:
    support: full
    details: Reads the same in check mode; it never changes anything.
  diff_mode:
    support: none
  idempotent:
    support: full
requirements:
  - systemd (C(systemctl)) on the host when O(services) is not empty
seealso:
  - module: ansible.builtin.find
"""

EXAMPLES = r"""
- name: Read what differs from what the roles would make
  stateserver.ha.managed_state_info:
    files:
      - {path: /etc/mongod.conf, owner: root, group: mongodb, mode: "0640", checksum: "{{ conf | hash('sha1') }}"}
      - {path: /var/lib/mongodb, owner: mongodb, group: mongodb, mode: "0750"}
      - {path: /usr/bin/mongod}
    services: [mongod]
  register: managed

- name: Apply the role in full when anything differs
  ansible.builtin.include_role:
    name: stateserver.ha.mongod
  when: managed.drift | length > 0
"""

RETURN = r"""
drift:
  description: Each difference, in the order asked, the paths first; empty when the host matches.
  returned: success
  type: list
  elements: str
  sample: ["/etc/mongod.conf", "service mongod"]
files:
  description:
    - What the host shows at each path (owner, group, mode; C(checksum_matches) where a checksum was asked), or
      null where nothing is there.
  returned: success
  type: dict
  sample: {"/etc/mongod.conf": {"owner": "root", "group": "mongodb", "mode": "0644", "checksum_matches": false}}
services:
  description: C(ActiveState) and C(UnitFileState) of each service as systemd reports them.
  returned: success
  type: dict
  sample: {"mongod": {"ActiveState": "inactive", "UnitFileState": "enabled"}}
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.stateserver.ha.plugins.module_utils._drift import (
    SERVICE_PROPERTIES,
    drift,
    parse_systemctl_show,
    unit_name,
)


def name_of(lookup, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:  # no such user or group: the number is what differs
        return str(ident)


def observe(module: AnsibleModule, want: dict) -> dict | None:
    try:
        st = os.lstat(want["path"])
    except FileNotFoundError:
        return None
    except OSError as exc:
        module.fail_json(msg=f"cannot read {want['path']}: {exc}")
    have = {"owner": name_of(pwd.getpwuid, st.st_uid), "group": name_of(grp.getgrgid, st.st_gid),
            "mode": f"{stat.S_IMODE(st.st_mode):04o}"}
    if want.get("checksum") is not None:
        have["checksum"] = module.sha1(want["path"]) if stat.S_ISREG(st.st_mode) else None
    return have


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "files": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "path", "required": True},
                "owner": {"type": "str"},
                "group": {"type": "str"},
                "mode": {"type": "str"},
                "checksum": {"type": "str", "no_log": True},
            }},
            "services": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    files, services = module.params["files"], module.params["services"]
    observed = {want["path"]: observe(module, want) for want in files}
    states = {}
    if services:
        systemctl = module.get_bin_path("systemctl", required=True)
        rc, out, err = module.run_command(
            [systemctl, "show", f"--property={','.join(SERVICE_PROPERTIES)}", "--", *map(unit_name, services)])
        if rc != 0:
            module.fail_json(msg=f"systemctl show failed ({rc}): {err.strip()}")
        states = parse_systemctl_show(services, out)
    # What the host shows, with whether each asked checksum matches instead of the checksum (a secret's, maybe).
    shown = {}
    for want in files:
        have = observed[want["path"]]
        if have is not None and "checksum" in have:
            have = {**{k: v for k, v in have.items() if k != "checksum"},
                    "checksum_matches": have["checksum"] == want["checksum"]}
        shown[want["path"]] = have
    module.exit_json(changed=False, drift=drift(files, observed, services, states), files=shown, services=states)


if __name__ == "__main__":
    main()
