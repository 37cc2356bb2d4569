"""The README's example tests run as written, against real clusters (a child pytest, as a user would run them)."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_tests():
    """The README's Python blocks that define tests (a stub that ends in `...` is no example to run)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [block for block in blocks if "def test_" in block and not block.rstrip().endswith("...")]


def test_the_readme_examples_run(tmp_path, harness_image):
    examples = readme_tests()
    assert len(examples) >= 1, "the README lost its example"
    for number, block in enumerate(examples):
        (tmp_path / f"test_readme_{number}.py").write_text(block)

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"{len(examples)} passed" in result.stdout
