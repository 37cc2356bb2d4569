"""How mmdebstrap is run: the mode this machine allows, or one line naming the remedies."""

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from pgharness.errors import ImageError
from pgharness.image import BuildHost, mmdebstrap_mode


def host(*, root=False, unshare=False, sudo=False, fakechroot=False):
    return BuildHost(lambda: root, lambda: unshare, lambda: sudo, lambda: fakechroot)


@pytest.mark.parametrize(
    ("machine", "mode"),
    [
        (host(root=True, unshare=True, sudo=True, fakechroot=True), "root"),
        (host(unshare=True, sudo=True, fakechroot=True), "unshare"),
        # GitHub's ubuntu-24.04 runners: user namespaces restricted by AppArmor, passwordless sudo.
        (host(sudo=True, fakechroot=True), "sudo"),
        (host(fakechroot=True), "fakechroot"),
    ],
)
def test_the_first_mode_the_machine_allows(machine, mode):
    assert mmdebstrap_mode({}, machine) == mode


def test_the_user_chooses_the_mode():
    assert mmdebstrap_mode({"PGHARNESS_MMDEBSTRAP_MODE": "fakechroot"}, host(root=True)) == "fakechroot"
    with pytest.raises(ImageError, match="'chroot' is not an mmdebstrap mode"):
        mmdebstrap_mode({"PGHARNESS_MMDEBSTRAP_MODE": "chroot"}, host(root=True))


def test_no_mode_is_one_line_naming_the_remedies():
    with pytest.raises(ImageError) as raised:
        mmdebstrap_mode({}, host())
    message = str(raised.value)
    assert "\n" not in message
    for remedy in ("as root", "user namespaces", "passwordless sudo", "fakechroot", "PGHARNESS_MMDEBSTRAP_MODE"):
        assert remedy in message


STUB = "#!/bin/sh\nexit {code}\n"


def as_user(name, function, path):
    """`function()`'s result (or its ImageError's class name) in a forked child running as user `name` with
    PATH `path`: the real probes, as that user meets them."""
    account = pwd.getpwnam(name)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, answer through the pipe, never return into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            os.environ["PATH"] = path
            try:
                answer = function()
            except ImageError as e:
                answer = f"ImageError {e}"
            os.write(write, answer.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to become a user without user namespaces")
@pytest.mark.parametrize(("sudo_exit", "expected"), [(0, "sudo"), (1, "ImageError")])
def test_the_probes_of_a_user_without_user_namespaces(sudo_exit, expected):
    # As `nobody`: no subordinate ids, and an `unshare` that is not permitted (a stub failing as Ubuntu
    # 24.04's AppArmor makes it fail); a sudo that works, then one that asks for a password; no fakechroot.
    # Stubs in a folder the user can reach (pytest's tmp_path is root's only), and PATH that folder alone:
    # the probes find nothing of this machine's (Debian's mmdebstrap recommends fakechroot, so many have it).
    with tempfile.TemporaryDirectory(prefix="pgh-stubs-") as folder:
        stubs = Path(folder)
        stubs.chmod(0o755)
        for name, code in (("unshare", 1), ("newuidmap", 0), ("sudo", sudo_exit)):
            (stubs / name).write_text(STUB.format(code=code))
            (stubs / name).chmod(0o755)
        answer = as_user("nobody", lambda: mmdebstrap_mode({}), str(stubs))
    assert answer.split()[0] == expected, answer
