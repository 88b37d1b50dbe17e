"""mongod-compatible command line and YAML config file parsing (the subset the simulator models)."""
from __future__ import annotations

import re
from typing import Any

from . import tls
from .node import Options


class UsageError(Exception):
    """Bad command line or config file; mongod exits with code 2 (BadValue) for these."""


# flag -> (dotted config key, takes a value)
FLAGS: dict[str, tuple[str, bool]] = {
    "--port": ("net.port", True),
    "--bind_ip": ("net.bindIp", True),
    "--bind_ip_all": ("net.bindIpAll", False),
    "--replSet": ("replication.replSetName", True),
    "--oplogSize": ("replication.oplogSizeMB", True),
    "--dbpath": ("storage.dbPath", True),
    "--logpath": ("systemLog.path", True),
    "--logappend": ("systemLog.logAppend", False),
    "--quiet": ("systemLog.quiet", False),
    "--fork": ("processManagement.fork", False),
    "--pidfilepath": ("processManagement.pidFilePath", True),
    "--keyFile": ("security.keyFile", True),
    "--auth": ("security.authorization", False),
    "--clusterAuthMode": ("security.clusterAuthMode", True),
    "--tlsMode": ("net.tls.mode", True),
    "--tlsCertificateKeyFile": ("net.tls.certificateKeyFile", True),
    "--tlsCAFile": ("net.tls.CAFile", True),
    "--tlsClusterFile": ("net.tls.clusterFile", True),
    "--tlsAllowConnectionsWithoutCertificates": ("net.tls.allowConnectionsWithoutCertificates", False),
}
CONFIG_KEYS = {"net.port", "net.bindIp", "net.bindIpAll", "replication.replSetName", "replication.oplogSizeMB",
               "storage.dbPath", "storage.journal.enabled", "systemLog.destination", "systemLog.path",
               "systemLog.logAppend", "systemLog.quiet", "processManagement.fork", "processManagement.pidFilePath",
               "security.keyFile", "security.authorization", "net.tls.mode", "net.tls.certificateKeyFile",
               "net.tls.CAFile", "net.tls.allowConnectionsWithoutCertificates", "security.clusterAuthMode",
               "net.tls.clusterFile"}
# Accepted for drop-in compatibility with stock mongod.conf files, without effect in the simulator.
IGNORED_KEYS = {"processManagement.timeZoneInfo", "storage.engine", "storage.directoryPerDB",
                "storage.wiredTiger.engineConfig.cacheSizeGB", "net.unixDomainSocket.enabled", "net.ipv6",
                "net.maxIncomingConnections", "systemLog.verbosity",
                "operationProfiling.mode", "operationProfiling.slowOpThresholdMs"}


def parse_yaml(text: str) -> dict:
    """Nested block mappings with scalar values: the shape of a mongod config file."""
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"\s+#.*$", "", raw.rstrip()) if not raw.lstrip().startswith("#") else ""
        if not line.strip() or line.strip() == "---":
            continue
        if "\t" in line[:len(line) - len(line.lstrip())]:
            raise UsageError(f"Error parsing YAML config file: line {lineno}: tabs are not allowed for indentation")
        indent = len(line) - len(line.lstrip())
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*:(?:\s+(.*))?$", line.strip())
        if not m:
            raise UsageError(f"Error parsing YAML config file: line {lineno}: expected 'key: value', got "
                             f"{line.strip()!r}")
        key, value = m.group(1), m.group(2)
        while stack and indent <= stack[-1][0]:
            stack.pop()
        if not stack:
            raise UsageError(f"Error parsing YAML config file: line {lineno}: bad indentation")
        parent = stack[-1][1]
        if value is None or value == "":
            child: dict = {}
            parent[key] = child
            stack.append((indent, child))
        else:
            parent[key] = _scalar(value)
    return root


def _scalar(v: str) -> Any:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    if re.fullmatch(r"-?\d+\.\d*", v):
        return float(v)
    return v


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "setParameter":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_args(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict]:
    """Returns (settings by dotted key, setParameter values, flags like version/help)."""
    flags: dict = {}
    cli: dict[str, Any] = {}
    params: dict[str, Any] = {}
    config_file = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("--version", "--help", "-h"):
            flags[name.lstrip("-")] = True
            i += 1
            continue

        def value(name: str = name, eq: str = eq, inline: str = inline) -> str:
            nonlocal i
            if eq:
                return inline
            if i + 1 >= len(argv):
                raise UsageError(f"Error parsing command line: the required argument for option '{name}' is "
                                 "missing")
            i += 1
            return argv[i]

        if name in ("--config", "-f"):
            config_file = value()
        elif name == "--setParameter":
            k, _, v = value().partition("=")
            if not k or not _:
                raise UsageError("Error parsing command line: --setParameter expects name=value")
            params[k] = _scalar(v)
        elif name in FLAGS:
            key, takes = FLAGS[name]
            if takes:
                cli[key] = value()
            else:
                if eq:
                    cli[key] = _scalar(inline)
                else:
                    cli[key] = True
        else:
            raise UsageError(f"Error parsing command line: unrecognised option '{name}'")
        i += 1
    settings: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file) as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"Error reading config file: {e.strerror}: {config_file}") from None
        raw = _flatten(parse_yaml(text))
        for k, v in raw.items():
            if k == "setParameter":
                if not isinstance(v, dict):
                    raise UsageError("setParameter must be a mapping")
                for pk, pv in v.items():
                    params.setdefault(pk, pv)
                continue
            if k in IGNORED_KEYS:
                continue
            if k not in CONFIG_KEYS:
                raise UsageError(f"Unrecognized option: {k}")
            settings[k] = v
        flags["config_file"] = config_file
    settings.update(cli)  # the command line wins over the config file, as with mongod
    return settings, params, flags


def build_options(settings: dict[str, Any], params: dict[str, Any], argv: list[str]) -> Options:
    try:
        port = int(settings.get("net.port", 27017))
    except (TypeError, ValueError):
        raise UsageError(f"Bad value for net.port: {settings.get('net.port')!r}") from None
    if not 0 < port < 65536:
        raise UsageError(f"net.port must be between 1 and 65535, got {port}")
    if settings.get("net.bindIpAll"):
        bind = ["0.0.0.0"]
    else:
        bind = [b.strip() for b in str(settings.get("net.bindIp", "127.0.0.1")).split(",") if b.strip()]
        bind = ["127.0.0.1" if b == "localhost" else b for b in bind]
    auth = settings.get("security.authorization", False)
    if isinstance(auth, str):
        if auth not in ("enabled", "disabled"):
            raise UsageError(f"security.authorization must be 'enabled' or 'disabled', got {auth!r}")
        auth = auth == "enabled"
    dest = settings.get("systemLog.destination")
    if dest not in (None, "file", "syslog"):
        raise UsageError(f"Bad value for systemLog.destination: {dest}")
    oplog_mb = settings.get("replication.oplogSizeMB")
    if oplog_mb is not None:
        try:
            oplog_mb = float(oplog_mb)
        except (TypeError, ValueError):
            raise UsageError(f"Bad value for replication.oplogSizeMB: {oplog_mb!r}") from None
        if oplog_mb <= 0:
            raise UsageError(f"replication.oplogSizeMB must be positive, got {oplog_mb}")
    try:
        tls_settings = tls.settings(settings)
    except tls.TlsConfigError as e:
        raise UsageError(str(e)) from None
    tc = params.get("enableTestCommands")
    for k in params:
        if k not in KNOWN_PARAMETERS:
            raise UsageError(f"Unknown --setParameter '{k}'")
    return Options(port=port, bind_ips=bind, repl_set=settings.get("replication.replSetName"),
                   dbpath=str(settings.get("storage.dbPath", "/data/db")), test_commands=tc in (1, True, "1", "true"),
                   key_file=settings.get("security.keyFile"),
                   # Internal authentication (a keyFile, or member certificates) turns authorization on, as in mongod.
                   auth=bool(auth) or bool(settings.get("security.keyFile")) or tls_settings.sends_x509,
                   parameters=dict(params), argv=list(argv), parsed=_nest(settings), oplog_size_mb=oplog_mb,
                   tls=tls_settings)


KNOWN_PARAMETERS = {"enableTestCommands", "allowMultipleArbiters", "enableLocalhostAuthBypass",
                    "authenticationMechanisms", "logLevel", "diagnosticDataCollectionEnabled"}


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for k, v in flat.items():
        cur = out
        parts = k.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out
