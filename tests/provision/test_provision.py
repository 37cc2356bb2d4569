"""Provisioning moves nothing that is installed: checked on a fresh Debian bookworm root.

The root is made once with mmdebstrap (python3, perl and iptables, as a user's machine has them) and
cached as a tarball under ~/.cache/pgharness; each run unpacks it and asks `.ci/provision --plan --root`
what it would do. Needs root (chroot, mmdebstrap) and Debian's mirror; skipped otherwise, saying why.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.provision

PROVISION = Path(__file__).resolve().parents[2] / ".ci" / "provision"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pgharness"
ROOT_TARBALL = CACHE / "provision-root-bookworm.tar"
DOCKER_PACKAGES = ["docker.io", "docker-cli", "docker-buildx", "docker-compose"]


@pytest.fixture(scope="module")
def bookworm_tarball():
    if os.geteuid() != 0:
        pytest.skip("needs root: mmdebstrap's root mode and chroot")
    if shutil.which("mmdebstrap") is None:
        pytest.skip("needs mmdebstrap (apt-get install mmdebstrap)")
    if not ROOT_TARBALL.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = ROOT_TARBALL.with_suffix(".partial")
        subprocess.run(
            [
                "mmdebstrap",
                "--variant=apt",
                "--format=tar",
                "--include=python3,perl,iptables",
                "bookworm",
                str(partial),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        partial.rename(ROOT_TARBALL)
    return ROOT_TARBALL


@pytest.fixture
def bookworm_root(bookworm_tarball, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(bookworm_tarball)], check=True, timeout=300)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def changes_to_installed(plan):
    """The installed packages an `apt-get install -s` plan would change, by provision's own parser."""
    result = subprocess.run(
        ["bash", "-c", '. "$1"; changes_to_installed', "bash", str(PROVISION)],
        input=plan,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PROVISION_LIBRARY": "1"},
        timeout=60,
    )
    return result.stdout.split("\n")[:-1]


def test_the_plan_on_a_fresh_bookworm_installs_docker_and_changes_nothing_installed(bookworm_root):
    result = subprocess.run(
        ["bash", str(PROVISION), "--plan", "--root", str(bookworm_root)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The four Docker packages come from trixie (and what they cannot do without), mmdebstrap from bookworm ...
    planned = dict(line.split()[1:3] for line in result.stdout.splitlines() if line.strip().startswith("plan: "))
    for package in DOCKER_PACKAGES:
        assert package in planned, result.stdout
    assert "mmdebstrap" in planned
    # ... and no installed package would move.
    assert "no installed package would change" in result.stdout

    # The old way, `apt-get install -t trixie`, would have: provision's check catches it (libc6 among them).
    old_way = subprocess.run(
        ["chroot", str(bookworm_root), "apt-get", "install", "-s", "-t", "trixie", *DOCKER_PACKAGES],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    changed = changes_to_installed(old_way.stdout)
    assert any(line.startswith("libc6") for line in changed), changed


def test_the_parser_names_upgrades_and_removals():
    plan = "\n".join(
        [
            "Inst login [1:4.13+dfsg1-1+deb12u1] (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])",
            "Inst docker.io (26.1.5+dfsg1-9+deb13u1+b1 Debian:13.8/stable [amd64])",
            "Remv python3.11-venv [3.11.2-6]",
            "Conf docker.io (26.1.5+dfsg1-9+deb13u1+b1 Debian:13.8/stable [amd64])",
        ]
    )
    assert changes_to_installed(plan) == [
        "login 1:4.13+dfsg1-1+deb12u1 -> 1:4.13+dfsg1-1+deb12u2",
        "python3.11-venv removed",
    ]
