"""The documentation's recipes (docs/recipes/*.py) run as written, against real clusters, in a pytest run of
their own as a user runs them; each has its page."""

import re
import subprocess
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"


def test_every_recipe_has_its_page():
    for recipe in RECIPES.glob("test_*.py"):
        page = recipe.with_name(recipe.stem.removeprefix("test_").replace("_", "-") + ".md")
        assert page.is_file(), f"{recipe.name} has no page {page.name}"
        assert f"```{{literalinclude}} {recipe.name}" in page.read_text(), f"{page.name} does not show {recipe.name}"


def test_the_recipes_run(tmp_path, harness_image):
    recipes = sorted(RECIPES.glob("test_*.py"))
    assert len(recipes) >= 8, "the documentation lost its recipes"
    for recipe in recipes:
        (tmp_path / recipe.name).write_text(recipe.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # Every recipe passed, or was skipped for a version it does not apply to (the summary says which).
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|skipped|failed|errors?)", result.stdout)}
    assert counts.get("passed", 0) + counts.get("skipped", 0) == len(recipes), result.stdout[-2000:]
