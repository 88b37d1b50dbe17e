# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""What differs between a host and what the roles would make of it. Pure functions, no I/O.

managed_state_info reads the host (one lstat and, where a checksum is wanted, one SHA-1 per path; one
`systemctl show` for the services) and names each difference here: a path ("/etc/mongod.conf") or a service
("service mongod"), in the order the roles listed them.
"""

from __future__ import annotations

# The two properties asked of systemctl, and the values of a service that needs nothing.
SERVICE_PROPERTIES = ("ActiveState", "UnitFileState")
SERVICE_OK = {"ActiveState": "active", "UnitFileState": "enabled"}


def file_differs(want: dict, have: dict | None) -> bool:
    """Whether a file or directory the roles manage differs from what they would make.

    `want` has `path` and, each optional, `owner`, `group`, `mode` ("0640") and `checksum` (SHA-1 of the content);
    `have` is what the host shows (owner and group names, mode as four octal digits, checksum of a regular file),
    or None when nothing is at the path.
    """
    if have is None:
        return True
    for key in ("owner", "group", "mode", "checksum"):
        if want.get(key) is not None and have.get(key) != want[key]:
            return True
    return False


def unit_name(service: str) -> str:
    return service if "." in service else f"{service}.service"


def parse_systemctl_show(services: list[str], stdout: str) -> dict[str, dict[str, str]]:
    """The properties of each service from `systemctl show --property=... -- <units>` output: one block per unit
    in the order asked, separated by a blank line (a unit that is not installed shows as inactive)."""
    blocks = stdout.strip("\n").split("\n\n") if stdout.strip() else []
    states = {}
    for index, service in enumerate(services):
        props = {}
        for line in (blocks[index] if index < len(blocks) else "").splitlines():
            key, _sep, value = line.partition("=")
            if key in SERVICE_PROPERTIES:
                props[key] = value
        states[service] = props
    return states


def drift(files: list[dict], observed: dict[str, dict | None], services: list[str],
          states: dict[str, dict[str, str]]) -> list[str]:
    """Every difference, named: the path of each file that differs, then "service <name>" for each service that is
    not both enabled and running."""
    out = [want["path"] for want in files if file_differs(want, observed.get(want["path"]))]
    out += [f"service {name}" for name in services if states.get(name) != SERVICE_OK]
    return out
