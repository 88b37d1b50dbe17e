#!/usr/bin/env python3
"""Stand-in mongod artifacts for the mongod role's `binary` and `package` install methods.

No registry reachable from here ships mongod, so the `install_methods` scenario installs artifacts of the same
shape as MongoDB's own instead:

- ``mongod``: one executable. It is the replica-set simulator (not MongoDB) packed as a Python zipapp that the
  host's ``python3`` runs; it accepts mongod's ``--config`` and command-line options.
- ``mongodb-standin.tgz``: MongoDB's archive layout, one top directory holding ``bin/mongod``.
- ``mongodb-standin.deb``: a Debian package that installs ``/usr/bin/mongod``, like ``mongodb-org-server``.

When ``$MONGOD_BIN`` names a real mongod, all three wrap that binary instead of the simulator.
``--build N`` makes a different build (content and package version) so a test can upgrade to it.
Prints a JSON object: artifact → path.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipapp
from pathlib import Path

PACKAGE = "mongosim-standin-server"
TOP_DIR = "mongodb-linux-standin"


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


def build_deb(executable: Path, out: Path, build: int) -> Path:
    """A .deb installing /usr/bin/mongod; its version follows the build so a new build is an upgrade."""
    target = out / "mongodb-standin.deb"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "usr" / "bin").mkdir(parents=True)
        shutil.copyfile(executable, root / "usr" / "bin" / "mongod")
        (root / "usr" / "bin" / "mongod").chmod(0o755)
        depends = "" if os.environ.get("MONGOD_BIN") else "Depends: python3 (>= 3.11)\n"
        (root / "DEBIAN" / "control").write_text(
            f"Package: {PACKAGE}\nVersion: 0.1.{build}\nArchitecture: all\nMaintainer: stateserver.ha tests\n"
            f"{depends}Section: database\nPriority: optional\n"
            "Description: test stand-in for mongodb-org-server (not MongoDB)\n"
            " Installs the mongosim replica-set simulator as /usr/bin/mongod for the stateserver.ha tests.\n")
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(target)],
                       check=True, stdout=subprocess.DEVNULL)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="directory with the mongosim wheels")
    parser.add_argument("--out", type=Path, required=True, help="directory the artifacts are written to")
    parser.add_argument("--build", type=int, default=1, help="build number (a higher one is an upgrade)")
    args = parser.parse_args(argv)
    if shutil.which("dpkg-deb") is None:
        parser.error("dpkg-deb is needed to build the stand-in .deb (apt-get install dpkg)")
    args.out.mkdir(parents=True, exist_ok=True)
    executable = build_executable(args.wheels, args.out, args.build)
    built = {
        "executable": executable,
        "tarball": build_tarball(executable, args.out, args.build),
        "deb": build_deb(executable, args.out, args.build),
    }
    print(json.dumps({name: str(path) for name, path in built.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
