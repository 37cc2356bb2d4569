"""The image's archive_command (`pgharness archive %p %f`, docker/pgharness.sh), run as the archiver runs it:
crash-safe as the manual asks."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "pgharness.sh"


def archive(archive_dir, source, name):
    """Run `archive_wal SOURCE NAME` with the archive in `archive_dir`; return (exit status, stderr)."""
    done = subprocess.run(
        ["sh", "-c", '. "$0"; archive_wal "$1" "$2"', str(SCRIPT), str(source), name],
        env={"PATH": "/usr/bin:/bin", "PGHARNESS_LIBRARY": "1", "ARCHIVE_DIR": str(archive_dir)},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr


def test_a_new_segment_is_copied_and_nothing_else_is_left(tmp_path):
    (tmp_path / "archive").mkdir()
    segment = tmp_path / "000000010000000000000003"
    segment.write_bytes(b"wal" * 1000)
    assert archive(tmp_path / "archive", segment, segment.name) == (0, "")
    assert (tmp_path / "archive" / segment.name).read_bytes() == segment.read_bytes()
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == [segment.name]  # no temporary file


def test_the_same_segment_again_is_success_and_another_one_is_refused_loudly(tmp_path):
    (tmp_path / "archive").mkdir()
    segment = tmp_path / "000000010000000000000003"
    segment.write_bytes(b"wal" * 1000)
    archive(tmp_path / "archive", segment, segment.name)
    # A server that crashed after the copy and before it recorded success archives it again: that succeeds.
    assert archive(tmp_path / "archive", segment, segment.name) == (0, "")
    # Other bytes under the same name are refused, and the archived copy is kept.
    other = tmp_path / "other"
    other.write_bytes(b"other")
    code, said = archive(tmp_path / "archive", other, segment.name)
    assert code == 1
    assert "is in the archive already with other contents" in said
    assert (tmp_path / "archive" / segment.name).read_bytes() == segment.read_bytes()


def test_a_name_that_is_no_file_name_is_refused(tmp_path):
    for name in ("../escape", ".hidden", ""):
        code, said = archive(tmp_path, tmp_path, name)
        assert code != 0
        assert "is not a WAL file name" in said
