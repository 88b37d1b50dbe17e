#!/usr/bin/env python3
"""Stand-in mongod artifacts for the mongod role's `binary` and `package` install methods.

No registry reachable from here ships mongod, so the `install_methods` scenario installs artifacts of the same
shape as MongoDB's own instead:

- ``mongod``: one executable. It is the replica-set simulator (not MongoDB) packed as a Python zipapp that the
  host's ``python3`` runs; it accepts mongod's ``--config`` and command-line options.
- ``mongodb-standin.tgz``: MongoDB's archive layout, one top directory holding ``bin/mongod``.
- ``mongodb-standin.deb``: a Debian package that installs ``/usr/bin/mongod``, like ``mongodb-org-server``.
- ``repo/``: an apt repository laid out and signed like MongoDB's (``apt/debian/dists/bookworm/mongodb-org/7.0``),
  holding a stand-in ``mongodb-org-server`` package, with its signing key as ``server-7.0.asc``. The signing key
  is made for this repository alone (a throw-away GnuPG home next to it). ``serve`` publishes it over HTTP on
  one address (the lab bridge), ``stop`` ends that server.

When ``$MONGOD_BIN`` names a real mongod, they all wrap that binary instead of the simulator.
``--build N`` makes a different build (content and package version) so a test can upgrade to it; the repository
keeps every build's package. ``build`` prints a JSON object: artifact → path.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import zipapp
from pathlib import Path

import labhosts  # next to this file: its apt-get helper installs missing controller tools

PACKAGE = "mongosim-standin-server"
REPO_PACKAGE = "mongodb-org-server"  # the name the mongod role installs from MongoDB's repository
TOP_DIR = "mongodb-linux-standin"
SUITE, SERIES, COMPONENT, ARCH = "bookworm", "7.0", "main", "amd64"


def build_executable(wheels: Path, out: Path, build: int) -> Path:
    """The simulator and its dependencies as one executable file, or a copy of $MONGOD_BIN."""
    target = out / "mongod"
    real = os.environ.get("MONGOD_BIN")
    if real:
        shutil.copyfile(real, target)
        target.chmod(0o755)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
                        f"--find-links={wheels}", f"--target={tree}", "--no-compile", "mongosim"], check=True)
        # A zipapp cannot load compiled extensions; pymongo and bson fall back to their pure-Python code.
        for path in list(tree.rglob("*.so")) + list(tree.glob("bin")) + list(tree.glob("*.dist-info")):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        (tree / "STANDIN_BUILD").write_text(f"{build}\n")
        zipapp.create_archive(tree, target, interpreter="/usr/bin/env python3", main="mongosim.cli:main")
    target.chmod(0o755)
    return target


def _add(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.uname, info.gname, info.mtime = mode, "root", "root", 0
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_tarball(executable: Path, out: Path, build: int) -> Path:
    """MongoDB's archive layout: <top>/bin/mongod, plus a note that says what it is."""
    target = out / "mongodb-standin.tgz"
    note = f"Test stand-in build {build}: bin/mongod is the mongosim simulator (or $MONGOD_BIN), not MongoDB.\n"
    with tarfile.open(target, "w:gz") as tar:
        _add(tar, TOP_DIR, None, 0o755)
        _add(tar, f"{TOP_DIR}/README.standin", note.encode(), 0o644)
        _add(tar, f"{TOP_DIR}/bin", None, 0o755)
        _add(tar, f"{TOP_DIR}/bin/mongod", executable.read_bytes(), 0o755)
    return target


def build_deb(executable: Path, target: Path, build: int, package: str = PACKAGE) -> Path:
    """A .deb installing /usr/bin/mongod; its version follows the build so a new build is an upgrade."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "usr" / "bin").mkdir(parents=True)
        shutil.copyfile(executable, root / "usr" / "bin" / "mongod")
        (root / "usr" / "bin" / "mongod").chmod(0o755)
        depends = "" if os.environ.get("MONGOD_BIN") else "Depends: python3 (>= 3.11)\n"
        (root / "DEBIAN" / "control").write_text(
            f"Package: {package}\nVersion: 0.1.{build}\nArchitecture: all\nMaintainer: stateserver.ha tests\n"
            f"{depends}Section: database\nPriority: optional\n"
            "Description: test stand-in for mongodb-org-server (not MongoDB)\n"
            " Installs the mongosim replica-set simulator as /usr/bin/mongod for the stateserver.ha tests.\n")
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(target)],
                       check=True, stdout=subprocess.DEVNULL)
    return target


def _gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], input=data, check=True, capture_output=True).stdout


def _signing_home(out: Path) -> Path:
    """A GnuPG home with one passphrase-less key that signs this repository and nothing else."""
    home = out / "gnupg"
    if not (home / "pubring.kbx").exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _gpg(home, "--quick-generate-key", "stateserver.ha test repository <repo@stateserver.invalid>",
             "ed25519", "sign", "never")
    return home


def _index_entry(deb: Path, filename: str) -> str:
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, text=True, capture_output=True).stdout
    data = deb.read_bytes()
    return (control.rstrip("\n") + f"\nFilename: {filename}\nSize: {len(data)}\n"
            f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")


def build_repo(executable: Path, out: Path, build: int) -> Path:
    """MongoDB's apt layout under repo/apt/debian, signed (InRelease), every build's package in the pool."""
    repo = out / "repo"
    archive = repo / "apt" / "debian"
    pool = archive / "pool" / COMPONENT / "m" / REPO_PACKAGE
    pool.mkdir(parents=True, exist_ok=True)
    build_deb(executable, pool / f"{REPO_PACKAGE}_0.1.{build}_all.deb", build, REPO_PACKAGE)
    dist = archive / "dists" / SUITE / "mongodb-org" / SERIES
    index = f"{COMPONENT}/binary-{ARCH}/Packages"
    (dist / index).parent.mkdir(parents=True, exist_ok=True)
    entries = [_index_entry(deb, str(deb.relative_to(archive))) for deb in sorted(pool.glob("*.deb"))]
    (dist / index).write_text("\n".join(entries))
    packages = (dist / index).read_bytes()
    release = (
        f"Origin: stateserver.ha tests\nLabel: mongodb-org stand-in (not MongoDB)\nSuite: {SUITE}\n"
        f"Codename: {SUITE}/mongodb-org\nVersion: {SERIES}\nDate: {email.utils.formatdate(usegmt=True)}\n"
        f"Architectures: {ARCH}\nComponents: {COMPONENT}\n"
        f"MD5Sum:\n {hashlib.md5(packages).hexdigest()} {len(packages)} {index}\n"
        f"SHA256:\n {hashlib.sha256(packages).hexdigest()} {len(packages)} {index}\n")
    (dist / "Release").write_text(release)
    home = _signing_home(out)
    try:
        (dist / "InRelease").write_bytes(_gpg(home, "--clearsign", "--digest-algo", "SHA256",
                                              data=release.encode()))
        (repo / f"server-{SERIES}.asc").write_bytes(_gpg(home, "--armor", "--export"))
    finally:
        # gpg starts an agent for its key home; it must not outlive the build.
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    return repo


def serve(repo: Path, address: str, port: int, pidfile: Path) -> int:
    """Publish the repository on address:port in the background; the PID goes to pidfile."""
    stop(pidfile)
    log = (pidfile.parent / "repo-server.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", address, "--directory",
                             str(repo)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the repository server exited at once (see {log.name})")
        if any(f":{port:04X} " in line for line in Path("/proc/net/tcp").read_text().splitlines()[1:]):
            return proc.pid
        time.sleep(0.1)
    raise SystemExit(f"the repository server does not listen on {address}:{port}")


def stop(pidfile: Path) -> None:
    """End the server that serve() started, by its PID, and only if that PID is still that server."""
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    if b"http.server" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    pidfile.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the executable, the .tgz, the .deb and the apt repository")
    build.add_argument("--wheels", type=Path, required=True, help="directory with the mongosim wheels")
    build.add_argument("--out", type=Path, required=True, help="directory the artifacts are written to")
    build.add_argument("--build", type=int, default=1, help="build number (a higher one is an upgrade)")
    serve_cmd = sub.add_parser("serve", help="publish OUT/repo over HTTP in the background")
    stop_cmd = sub.add_parser("stop", help="stop the server that serve started")
    for cmd in (serve_cmd, stop_cmd):
        cmd.add_argument("--out", type=Path, required=True, help="the directory build wrote")
    serve_cmd.add_argument("--address", required=True, help="the one address to listen on (never 0.0.0.0)")
    serve_cmd.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    pidfile = args.out / "repo-server.pid"
    if args.command == "stop":
        stop(pidfile)
        return 0
    if args.command == "serve":
        if args.address in ("0.0.0.0", "::", ""):
            parser.error("serve listens on one address (the lab bridge), not on every interface")
        serve(args.out / "repo", args.address, args.port, pidfile)
        return 0
    labhosts.ensure_host_tools({"dpkg-deb": "dpkg", "gpg": "gpg", "gpgconf": "gpgconf"})
    args.out.mkdir(parents=True, exist_ok=True)
    executable = build_executable(args.wheels, args.out, args.build)
    built = {
        "executable": executable,
        "tarball": build_tarball(executable, args.out, args.build),
        "deb": build_deb(executable, args.out / "mongodb-standin.deb", args.build),
        "repository": build_repo(executable, args.out, args.build),
    }
    print(json.dumps({name: str(path) for name, path in built.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
