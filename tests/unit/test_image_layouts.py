"""Where the server binaries are, in the layouts of the images users bring.

docker/pgharness.sh finds them at run time: on PATH (the official images),
through pg_config, or in a package layout (Debian's /usr/lib/postgresql/N/bin,
source builds' /usr/local/pgsql/bin, PGDG RPMs' /usr/pgsql-N/bin). These tests
source the script's functions in a plain shell, with fake layouts.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "pgharness.sh"


def fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for tool in ("postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_isready", "psql"):
        (path / tool).write_text("#!/bin/sh\n")
        (path / tool).chmod(0o755)
    return path


def find_bindir(tmp_path: Path, path_dirs: list[Path], globs: str) -> str:
    """Run find_bindir with PATH limited to `path_dirs` (plus the shell's own tools)."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("ls", "sort", "dirname"):
        target = tools / tool
        if not target.exists():
            target.symlink_to(shutil.which(tool))
    path = ":".join(str(d) for d in [*path_dirs, tools])
    result = subprocess.run(
        ["/bin/sh", "-c", f". {SCRIPT}; find_bindir"],
        env={"PATH": path, "PGHARNESS_LIBRARY": "1", "PGHARNESS_BIN_GLOBS": globs},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_official_image_layout_binaries_on_path(tmp_path):
    # postgres:17 puts /usr/lib/postgresql/17/bin on PATH; Alpine puts them in /usr/local/bin.
    bindir = fake_bindir(tmp_path / "usr/local/bin")
    assert find_bindir(tmp_path, [bindir], str(tmp_path / "nowhere/*/bin")) == str(bindir)


def test_pg_config_names_the_bindir(tmp_path):
    bindir = fake_bindir(tmp_path / "opt/pg/bin")
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "pg_config").write_text(f"#!/bin/sh\necho {bindir}\n")
    (wrapper / "pg_config").chmod(0o755)
    assert find_bindir(tmp_path, [wrapper], str(tmp_path / "nowhere/*/bin")) == str(bindir)


def test_debian_package_layout_picks_the_newest_version(tmp_path):
    # Debian keeps each version in /usr/lib/postgresql/N/bin, off PATH.
    for version in ("13", "15", "17"):
        fake_bindir(tmp_path / f"usr/lib/postgresql/{version}/bin")
    found = find_bindir(tmp_path, [], str(tmp_path / "usr/lib/postgresql/*/bin"))
    assert found == str(tmp_path / "usr/lib/postgresql/17/bin")


@pytest.mark.parametrize("layout", ["usr/local/pgsql/bin", "usr/pgsql-16/bin"])
def test_source_build_and_rpm_layouts(tmp_path, layout):
    bindir = fake_bindir(tmp_path / layout)
    globs = f"{tmp_path}/usr/local/pgsql/bin {tmp_path}/usr/pgsql-*/bin"
    assert find_bindir(tmp_path, [], globs) == str(bindir)


def test_no_server_binaries_finds_nothing(tmp_path):
    assert find_bindir(tmp_path, [], str(tmp_path / "nowhere/*/bin")) == ""
