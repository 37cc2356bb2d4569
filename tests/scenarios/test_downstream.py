"""Another project uses the harness: the built wheel, installed into a fresh virtual environment far from this
repository, runs that project's own replication test with the fixtures and its own pyproject.toml settings."""

import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.downstream

REPOSITORY = Path(__file__).resolve().parents[2]

DOWNSTREAM_TEST = """
import pgharness


def test_replicates_and_promotes(cluster):
    cluster.primary.sql("CREATE TABLE hoge (col integer)")
    cluster.primary.sql("INSERT INTO hoge VALUES (1)")
    cluster.primary.wait_for_catchup(cluster.standby)
    assert cluster.standby.scalar("SELECT count(*) FROM hoge") == 1

    cluster.standby.promote()
    cluster.standby.sql("INSERT INTO hoge VALUES (2)")
    assert cluster.standby.scalar("SELECT count(*) FROM hoge") == 2


def test_settings_from_pyproject_reach_the_nodes(shared_cluster):
    assert shared_cluster.standby.scalar("SHOW work_mem") == "7MB"
    assert shared_cluster.primary.scalar("SELECT count(*) FROM app_schema_marker") == 0


def test_the_harness_is_the_installed_wheel():
    from pgharness.compose import COMPOSE_FILE

    print("HARNESS", pgharness.__file__, COMPOSE_FILE)
    assert "site-packages" in pgharness.__file__
    assert COMPOSE_FILE.is_file() and "site-packages" in str(COMPOSE_FILE)
"""


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_wheel_works_in_a_project_of_its_own(tmp_path, harness_settings, harness_image):
    # Build the wheel and install it (with its dependencies) into a fresh virtual environment: by this
    # pip (`--python`, no pip of its own to bootstrap), uncompiled (what the run imports compiles then).
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPOSITORY)])
    [wheel] = (tmp_path / "dist").glob("pgharness-*.whl")
    # The package's modules and nothing else (an earlier build's folder in the checkout holds none it lost).
    with zipfile.ZipFile(wheel) as archive:
        archive_names = archive.namelist()
    shipped = {name for name in archive_names if re.fullmatch(r"pgharness/[^/]+\.py", name)}
    assert shipped == {f"pgharness/{path.name}" for path in (REPOSITORY / "harness").glob("*.py")}
    # With its types marker (PEP 561): a project's type checker reads the package's annotations.
    assert "pgharness/py.typed" in archive_names
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-compile",
            str(wheel),
        ]
    )

    # A downstream project: its tests, its settings in pyproject.toml, its schema as init SQL.
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_app.py").write_text(DOWNSTREAM_TEST)
    (project / "schema.sql").write_text("CREATE TABLE app_schema_marker (id integer);\n")
    image = f'pg_image = "{harness_settings.spec.base_image}"\n' if harness_settings.spec.base_image else ""
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [tool.pytest.ini_options]
            pg_version = "{harness_settings.spec.pg_version}"
            pg_settings = ["work_mem = '7MB'"]
            pg_init_sql = ["schema.sql"]
            """
        )
        + image
    )

    # Its pytest finds the plugin by its entry point; nothing refers to this repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGHARNESS_", "PG_", "VIRTUAL_ENV"))}
    result = subprocess.run(
        [str(venv / "bin" / "pytest"), "-q", "-s", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**env, "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert str(REPOSITORY) not in result.stdout.split("HARNESS", 1)[1].splitlines()[0]


SCRIPT = """
from pgharness import Cluster

with Cluster(pg_version={version}, owner="pytest-{pid}") as cluster:
    cluster.primary.sql("CREATE TABLE hoge AS SELECT 1 AS col")
    cluster.primary.wait_for_catchup(cluster.standby)
    print(cluster.standby.scalar("SELECT current_setting('server_version_num')::int / 10000"),
          cluster.standby.scalar("SELECT count(*) FROM hoge"))
"""


def test_a_plain_script_starts_a_cluster_by_version_alone(harness_settings, harness_image, tmp_path):
    # Outside pytest, no image to name: Cluster(pg_version=N) takes the harness's image of that version (built
    # when missing, here already built by the session), and its with block removes everything.
    version = harness_settings.spec.pg_version
    if harness_settings.spec.base_image:
        pytest.skip("this run's image is built on a user's image; pg_version names the Debian-built one")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(version=version, pid=os.getpid()))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == [str(version), "1"]
