# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A service's own MongoDB user: what must be sent to make it exist with exactly the wanted roles and password.

Pure: the caller reads the user (or its absence) and whether the wanted password logs in, and sends the plan.
"""

from __future__ import annotations

CREATE, SET_PASSWORD, SET_ROLES = "create", "set_password", "set_roles"
# As mongod_user and ensure_availability's api_user take a password.
MIN_PASSWORD = 8
# A wanted user, as mongod_user's options and ensure_availability's api_user suboptions.
USER_OPTIONS = {
    "name": {"type": "str", "required": True},
    "database": {"type": "str", "default": "admin"},
    "password": {"type": "str", "required": True, "no_log": True},
    "roles": {"type": "list", "elements": "dict", "required": True, "options": {
        "role": {"type": "str", "required": True}, "db": {"type": "str", "required": True}}},
}
WORDS = {CREATE: "created", SET_PASSWORD: "set the password of", SET_ROLES: "set the roles of"}


def user_problems(name: str, database: str, password: str, roles: list) -> list[str]:
    """What is wrong with a wanted user (name, database, password length, roles), before anything is sent."""
    problems = role_problems(roles)
    if not name.strip() or not database.strip():
        problems.append("name and database must not be empty")
    if len(password) < MIN_PASSWORD:
        problems.append(f"password must be at least {MIN_PASSWORD} characters")
    return problems


def user_message(name: str, database: str, plan: list[str], check_mode: bool) -> str:
    done = " and ".join(WORDS[a] for a in plan) or "nothing to change for"
    return f"{'check mode, would have ' if check_mode and plan else ''}{done} user {name}@{database}"


def role_problems(roles: list) -> list[str]:
    """What is wrong with a roles list: each entry must be {role: name, db: database}, both non-empty strings."""
    problems = []
    for i, entry in enumerate(roles):
        if not (isinstance(entry, dict) and set(entry) == {"role", "db"}
                and all(isinstance(entry[k], str) and entry[k] for k in ("role", "db"))):
            problems.append(f"roles[{i}] must be a mapping with exactly role and db, both non-empty; got {entry!r}")
    return problems


def role_set(roles: list[dict]) -> set[tuple[str, str]]:
    return {(r["role"], r["db"]) for r in roles}


def user_plan(existing_roles: list[dict] | None, password_works: bool, wanted_roles: list[dict]) -> list[str]:
    """The changes to send, in order: create the user, or set its password and/or its roles.

    existing_roles: the user's roles as stored, None when there is no such user. password_works: whether the wanted
    password logs in as the user (ignored when there is none). Roles are compared as a set: a user with a role more
    than wanted loses it, so the user holds exactly what it is given.
    """
    if existing_roles is None:
        return [CREATE]
    plan = []
    if not password_works:
        plan.append(SET_PASSWORD)
    if role_set(existing_roles) != role_set(wanted_roles):
        plan.append(SET_ROLES)
    return plan
