# Copyright: stateserver.ha contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!
"""A deployment's secrets: where each comes from, and the one place new ones are made.

The decision (`plan_secrets`) is pure: given which secrets the run was handed in variables, which the secrets
directory holds and whether the replica set already exists, it says for each secret whether it is used as given,
reused from its file, generated, or missing. A missing secret of an existing set is an error, never a new value:
a new keyfile or admin password rolled onto running members would lock every later run out of the set (an AWX job
starts from an empty directory, so "not in the directory" does not mean "never made").

`SecretsDir` is the small file store (directory 0700, files 0600, created exclusively) the module writes through;
`answering_members` is the one question asked of the network (hello, no login).
"""

from __future__ import annotations

import os
import re
import secrets
import string
from dataclasses import dataclass, field

from ansible.module_utils.basic import missing_required_lib


def replset_module():
    """_replset, imported on first use and never at start-up: a run whose secrets and CA are all on file asks no
    seed, and so never pays for loading pymongo (a fifth of the module's start-up). Its monitor threads are then
    not waited for at exit (see _replset.exit_without_joining_monitors)."""
    from ansible_collections.stateserver.ha.plugins.module_utils import _replset

    _replset.exit_without_joining_monitors()
    return _replset


GIVEN, FILE, GENERATED, WOULD_GENERATE, MISSING = "variables", "file", "generated", "would_generate", "missing"


@dataclass(frozen=True)
class SecretSpec:
    name: str          # the module option and the key of the values it returns
    filename: str      # its file in the secrets directory (the names the roles' old lookups used)
    variable: str      # the inventory variable that gives it
    length: int        # of a generated value
    alphabet: str
    pattern: str       # what a usable value looks like, for a given or stored one
    rule: str          # that pattern in words, for the error message
    trim: bool = False  # whether whitespace around the value is ignored (mongod ignores it in a keyfile)


_ALNUM = string.ascii_letters + string.digits
# mongod reads a keyfile as base64 characters and whitespace, 6 to 1024 of them; 756 is what MongoDB's manual
# generates (openssl rand -base64 756 gives 1024 characters; letters and digits alone stay within both limits).
KEYFILE = SecretSpec("keyfile", "keyfile", "mongod_keyfile_content", 756, _ALNUM,
                     r"[A-Za-z0-9+/=\s]{6,1024}", "6 to 1024 base64 characters (A-Z a-z 0-9 + / =)", trim=True)
ADMIN_PASSWORD = SecretSpec("admin_password", "admin-password", "mongod_admin_password", 32, _ALNUM,
                            r"(?s).{8,}", "at least 8 characters")
API_TOKEN = SecretSpec("api_token", "api-token", "state_machine_api_token", 40, _ALNUM,
                       r"[\x21-\x7e]{16,}", "at least 16 printable ASCII characters, no spaces")
# The API server's own MongoDB user (stateserver.ha.mongod_user creates it); no other service knows it.
API_MONGO_PASSWORD = SecretSpec("api_mongo_password", "api-mongo-password", "api_server_mongo_password", 32, _ALNUM,
                                r"(?s).{8,}", "at least 8 characters")
SPECS = (KEYFILE, ADMIN_PASSWORD, API_TOKEN, API_MONGO_PASSWORD)
BY_NAME = {spec.name: spec for spec in SPECS}


def value_problem(spec: SecretSpec, value: str, where: str) -> str | None:
    """None when `value` is usable as `spec`, else a message naming `where` it came from (never the value)."""
    if not re.fullmatch(spec.pattern, value.strip() if spec.trim else value):
        return f"{spec.name} from {where} is not usable: it must be {spec.rule}"
    return None


def new_value(spec: SecretSpec) -> str:
    """A fresh random value (the OS's CSPRNG through `secrets`)."""
    return "".join(secrets.choice(spec.alphabet) for _position in range(spec.length))


@dataclass
class SecretsPlan:
    sources: dict[str, str]                         # secret name -> GIVEN, FILE, GENERATED, WOULD_GENERATE, MISSING
    missing: list[str] = field(default_factory=list)

    @property
    def to_generate(self) -> list[str]:
        return [name for name, source in self.sources.items() if source in (GENERATED, WOULD_GENERATE)]


def plan_secrets(given: set[str], stored: set[str], deployed: bool, check_mode: bool,
                 wanted: tuple[SecretSpec, ...] = SPECS, unused: frozenset[str] = frozenset()) -> SecretsPlan:
    """Where each wanted secret comes from.

    given: names handed in variables; stored: names whose file exists in the secrets directory; deployed: the
    replica set exists (a member answered hello as initiated). Variables win over files so a vault or an AWX
    credential always decides; a file is reused as it is. Only a first deployment may make new secrets, and in
    check mode it only says it would; except `unused`: secrets the existing set was seen never to have used (the
    API server's password while the set has no API user, an older deployment), which are new, not lost ones.
    """
    sources, missing = {}, []
    for spec in wanted:
        if spec.name in given:
            sources[spec.name] = GIVEN
        elif spec.name in stored:
            sources[spec.name] = FILE
        elif deployed and spec.name not in unused:
            sources[spec.name] = MISSING
            missing.append(spec.name)
        else:
            sources[spec.name] = WOULD_GENERATE if check_mode else GENERATED
    return SecretsPlan(sources, missing)


def missing_message(missing: list[str], secrets_dir: str, answering: list[str], set_name: str) -> str:
    """What to do when an existing set's secrets are not in this run: each one, and the three places to give it."""
    specs = [BY_NAME[name] for name in missing]
    return (
        f"Replica set {set_name!r} already exists ({', '.join(answering)} answered as its members), but this run "
        f"has no {', '.join(s.variable for s in specs)}. Give each one: as a variable (a vault or -e, for example "
        f"{specs[0].variable}), as a file in the secrets directory ({', '.join(s.filename for s in specs)} in "
        f"{secrets_dir}; set stateserver_secrets_dir to the directory the first deployment wrote), or, in AWX, by "
        "attaching the credential that holds them to the job template. New values would lock this run out of the "
        "set, so none were made and no host was touched."
    )


def generated_message(paths: list[str], check_mode: bool, deployed: bool = False) -> str:
    # An existing set gets only secrets it never used (unused in plan_secrets), such as a newer release's API user.
    what = "New secrets for the existing replica set" if deployed else "A first deployment"
    if check_mode:
        return (f"{what}: a real run would generate " + ", ".join(paths) +
                " (check mode wrote nothing).")
    return (f"{what}: generated " + ", ".join(paths) + " (directory 0700, files 0600). Store them "
            "safely now: every later run needs them (in AWX, put them in the job template's credential, since the "
            "next job starts from an empty directory).")


# hello needs no login, so the probe takes the connection options without the login ones.
PROBE_OPTIONS = ("seeds", "port", "replica_set", "tls", "tls_ca_file", "tls_certificate_key_file",
                 "tls_certificate_key_file_password", "tls_allow_invalid_certificates", "server_selection_timeout")


def _initiated(answers: dict) -> set[str]:
    return {seed for seed, hello in answers.items() if isinstance(hello, dict) and hello.get("setName")}


def answering_members_or_fail(module, result: dict) -> list[str]:
    """answering_members(module.params), failing the task with `result` when pymongo is missing or the seeds cannot
    be asked. pymongo is loaded here, only by a run that must ask."""
    replset = replset_module()
    if not replset.HAS_PYMONGO:
        module.fail_json(msg=missing_required_lib("pymongo"), exception=replset.PYMONGO_IMPORT_ERROR, **result)
    try:
        return answering_members(module.params)
    except replset.ReplSetError as exc:
        module.fail_json(msg=f"cannot ask the seeds whether the replica set exists: {exc}", **result)
    return []  # not reached: fail_json exits


def answering_members(params: dict) -> list[str]:
    """The seeds that answer hello as members of an initiated replica set (any set: never make secrets over one).

    A seed silent in the mode asked is asked again the other way (plain, or TLS without verifying: hello needs no
    login and carries no secret), because a set that still serves plain TCP while the run asks over TLS (or the
    reverse) must not look like a first deployment. A seed that takes the connection both ways but never answers
    hello (a CA that does not verify it, say) cannot be told apart from a member either: ReplSetError names it.
    Raises ReplSetError too when the options are not usable."""
    replset = replset_module()
    options = {key: params[key] for key in PROBE_OPTIONS}
    with replset.ReplSet(options) as rs:
        first = rs.probe()
        silent = [seed for seed in rs.seeds if seed not in _initiated(first)]
    found, second = _initiated(first), {}
    if silent:
        other = dict(options, seeds=silent, tls=not options["tls"], tls_ca_file=None, tls_certificate_key_file=None,
                     tls_certificate_key_file_password=None, tls_allow_invalid_certificates=not options["tls"])
        with replset.ReplSet(other) as rs:
            second = rs.probe()
        found |= _initiated(second)
    if not found:
        listening = replset.listening_but_silent(first)
        unsure = {seed: error for seed, error in replset.listening_but_silent(second).items() if seed in listening}
        if unsure:
            raise replset.ReplSetError(replset.listening_problem(unsure))
    return sorted(found)


class SecretsDirError(Exception):
    """The secrets directory or one of its files cannot be used; the message says which and why."""


class SecretsDir:
    """The controller directory that keeps a deployment's generated secrets."""

    def __init__(self, path: str) -> None:
        self.path = path

    def file(self, spec: SecretSpec) -> str:
        return os.path.join(self.path, spec.filename)

    def stored(self) -> set[str]:
        """Names of the secrets that have a file here."""
        return {spec.name for spec in SPECS if os.path.isfile(self.file(spec))}

    def read(self, spec: SecretSpec) -> str:
        path = self.file(spec)
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretsDirError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
        problem = value_problem(spec, value, path)
        if problem:
            raise SecretsDirError(problem + "; fix or remove the file")
        return value

    def write(self, spec: SecretSpec, value: str) -> str:
        """Write a new secret file, 0600 from its creation; an existing file is never overwritten."""
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise SecretsDirError(f"cannot create the secrets directory {self.path}: {exc.strerror or exc}") from None
        path = self.file(spec)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SecretsDirError(f"{path} appeared while this run was making it (another run at the same time?); "
                                  "run again to reuse it") from None
        except OSError as exc:
            raise SecretsDirError(f"cannot create {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        return path
