"""A cached Debian 12 minbase root file system for booting systemd in systemd-nspawn.

debootstrap takes ~85 s and the network, so the result is kept as a tarball under CACHE_DIR,
keyed by a hash of the package list: a changed list builds a new one, an unchanged one is reused.
The package dependencies of the .deb are included so that `apt install ./l2tpreorder_*.deb` inside
the container (which has no network: --private-network) finds them already installed.
Run `python -m tests.system.rootfs` to build it ahead of the test (.ci/run does).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE_DIR = Path(os.environ.get("L2TPREORDER_TEST_CACHE", "/var/cache/l2tpreorder-test"))
SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What systemd needs to boot in a container, plus what the test runs inside.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "libnss-systemd", "python3", "iproute2", "procps",
    "ca-certificates",
)
# The .deb's Depends (debian/control): installed from Debian's mirror while bootstrapping.
DEB_DEPENDS = (
    "python3-uvloop", "python3-construct", "python3-prometheus-client", "python3-yaml",
    "python3-dpkt",
)
PACKAGES = BASE_PACKAGES + DEB_DEPENDS


def tarball_path() -> Path:
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(sorted(PACKAGES))}".encode()).hexdigest()
    return CACHE_DIR / f"debian-{SUITE}-{key[:16]}.tar"


def ensure_tarball() -> Path:
    """The cached rootfs tarball, built first when missing (one builder at a time: flock)."""
    tarball = tarball_path()
    if tarball.is_file():
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.is_file():  # another run built it while we waited
            return tarball
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE_DIR))
        try:
            root = work / "root"
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(root), MIRROR],
                check=True, stdout=subprocess.DEVNULL, timeout=900,
            )
            # apt's downloaded .debs are not needed in the image.
            shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
            (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
            partial = tarball.with_suffix(".tar.part")
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
                check=True, timeout=600,
            )
            partial.rename(tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return tarball


def unpack(tarball: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(dest), "-xf", str(tarball)],
        check=True, timeout=600,
    )


if __name__ == "__main__":
    print(ensure_tarball())
    sys.exit(0)
