"""The ``mongosim`` launcher: takes mongod's options, optionally forks, serves until SIGTERM."""
from __future__ import annotations

import asyncio
import datetime
import errno
import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path

from . import MODELLED_VERSION, __version__
from .options import UsageError, build_options, parse_args

USAGE = """mongosim: a MongoDB replica-set simulator for tests (not MongoDB). Options (as mongod):
  --config/-f FILE  --port N  --bind_ip IPS  --bind_ip_all  --replSet NAME  --dbpath DIR  --logpath FILE
  --logappend  --fork  --pidfilepath FILE  --keyFile FILE  --auth  --setParameter name=value  --version"""


class JsonFormatter(logging.Formatter):
    """mongod-style structured log lines."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")
        doc = {"t": {"$date": ts}, "s": record.levelname[0], "c": "SIM", "ctx": "main", "msg": record.getMessage()}
        if record.exc_info:
            doc["attr"] = {"exception": self.formatException(record.exc_info)}
        return json.dumps(doc)


def _fail(msg: str, code: int) -> int:
    print(msg, file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings, params, flags = parse_args(argv)
        if flags.get("version"):
            print(f"mongosim version v{__version__} - a replica-set simulator for tests, NOT MongoDB; models "
                  f"MongoDB {MODELLED_VERSION} (db version v{MODELLED_VERSION}, wire version 21)")
            return 0
        if flags.get("help"):
            print(USAGE)
            return 0
        opts = build_options(settings, params, argv)
        fork = bool(settings.get("processManagement.fork"))
        logpath = settings.get("systemLog.path")
        if fork and not logpath and settings.get("systemLog.destination") != "syslog":
            raise UsageError("BadValue: --fork has to be used with --logpath or --syslog")
    except UsageError as e:
        print(str(e), file=sys.stderr)
        print("try 'mongosim --help' for more information", file=sys.stderr)
        return 2
    dbpath = Path(opts.dbpath)
    if not dbpath.is_dir():
        return _fail(f"NonExistentPath: Data directory {dbpath} not found. Create the missing directory or specify "
                     "another path using (1) the --dbpath command line option, or (2) by adding the 'storage.dbPath' "
                     "option in the configuration file.", 100)
    ready_w = None
    if fork:
        ready_r, ready_w = os.pipe()
        print("about to fork child process, waiting until server is ready for connections.", flush=True)
        pid = os.fork()
        if pid:
            os.close(ready_w)
            status = os.read(ready_r, 1)
            if status == b"1":
                print(f"forked process: {pid}")
                print("child process started successfully, parent exiting")
                return 0
            print(f"ERROR: child process failed, exited with {status!r}", file=sys.stderr)
            return 1
        os.close(ready_r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    handler: logging.Handler = logging.FileHandler(logpath) if logpath else logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("mongosim")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    lock = open(dbpath / "mongod.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _ready_fail(ready_w, f"DBPathInUse: Unable to lock the lock file: {dbpath / 'mongod.lock'}. "
                           "Another mongod instance is already running on the dbpath", 100)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    pidfile = settings.get("processManagement.pidFilePath")
    if pidfile:
        Path(pidfile).write_text(f"{os.getpid()}\n")
    return asyncio.run(_serve(opts, ready_w))


def _ready_fail(ready_w: int | None, msg: str, code: int) -> int:
    logging.getLogger("mongosim").error(msg)
    print(msg, file=sys.stderr)
    if ready_w is not None:
        os.write(ready_w, b"0")
    return code


async def _serve(opts, ready_w: int | None) -> int:  # type: ignore[no-untyped-def]
    from .server import Server
    server = Server(opts)
    try:
        await server.start()
    except OSError as e:
        code = 48 if e.errno == errno.EADDRINUSE else 1
        return _ready_fail(ready_w, f"Failed to start: {e}", code)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    if ready_w is not None:
        os.write(ready_w, b"1")
        os.close(ready_w)
    watch = os.environ.get("MONGOSIM_EXIT_WITH_PID")
    if watch and watch.isdigit():
        asyncio.ensure_future(_exit_with(int(watch), server))
    await server.stopped.wait()
    logging.getLogger("mongosim").info("shutdown complete")
    return 0


async def _exit_with(pid: int, server) -> None:  # type: ignore[no-untyped-def]
    """Test hygiene: stop when the test process that started us is gone (set by mongosim.testing)."""
    while True:
        await asyncio.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logging.getLogger("mongosim").info("parent test process %d is gone; shutting down", pid)
            await server.stop()
            return
        except PermissionError:
            continue


if __name__ == "__main__":
    sys.exit(main())
