"""The version matrix report: JUnit XML per PostgreSQL version in, a scenario x version table out::

    python -m pgharness.matrix test-results/matrix     # reads pg13.xml, pg15.xml, ...

Writes ``matrix.md`` (the table) and ``matrix.xml`` (every version's results as
one JUnit file, a test suite per version) next to its inputs, prints the table,
and exits 1 when any cell failed or errored. `make test-matrix` runs the suite
once per version (``make test PG_VERSION=N``) and then this.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

CELL = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}


@dataclass(frozen=True)
class Result:
    test: str  #: module::name[params]
    outcome: str  #: passed, failed, error or skipped
    message: str = ""


def read_junit(path: Path) -> list[Result]:
    """The results of one JUnit XML file, as pytest writes it."""
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = (case.get("classname") or "").replace(".", "/")
        test = f"{module}::{case.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (element.get("message") or "").strip()
                break
        results.append(Result(test, outcome, message))
    return results


def version_of(path: Path) -> str:
    m = re.fullmatch(r"pg(.+)\.xml", path.name)
    if not m:
        raise ValueError(f"{path.name}: matrix inputs are named pg<version>.xml")
    return m.group(1)


def table(results: dict[str, list[Result]]) -> str:
    """A Markdown table: one row per test, one column per version."""
    versions = sorted(results, key=lambda v: (len(v), v))
    cells: dict[str, dict[str, str]] = {}
    for version in versions:
        for r in results[version]:
            cells.setdefault(r.test, {})[version] = CELL[r.outcome]
    header = "| scenario | " + " | ".join(f"PG {v}" for v in versions) + " |"
    rule = "| --- | " + " | ".join("---" for _ in versions) + " |"
    rows = [f"| {test} | " + " | ".join(cells[test].get(v, "-") for v in versions) + " |" for test in sorted(cells)]
    totals = []
    for version in versions:
        counts = {o: sum(r.outcome == o for r in results[version]) for o in CELL}
        totals.append(", ".join(f"{n} {o}" for o, n in counts.items() if n))
    summary = "| **total** | " + " | ".join(totals) + " |"
    return "\n".join([header, rule, *rows, summary])


def merged_junit(results_dir: Path, files: list[Path]) -> ET.ElementTree:
    """One JUnit document holding each version's test suite, renamed pg<version>."""
    root = ET.Element("testsuites")
    for path in files:
        for suite in ET.parse(path).getroot().iter("testsuite"):
            suite.set("name", f"pg{version_of(path)}")
            root.append(suite)
    return ET.ElementTree(root)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pgharness.matrix RESULTS_DIR", file=sys.stderr)
        return 2
    results_dir = Path(args[0])
    files = sorted(results_dir.glob("pg*.xml"))
    if not files:
        print(f"matrix: no pg<version>.xml in {results_dir}: did the runs fail before testing?", file=sys.stderr)
        return 1
    results = {version_of(f): read_junit(f) for f in files}
    text = table(results)
    (results_dir / "matrix.md").write_text(text + "\n")
    merged_junit(results_dir, files).write(results_dir / "matrix.xml", encoding="unicode")
    print(text)
    bad = [f"PG {v}: {r.test}" for v, rs in results.items() for r in rs if r.outcome in ("failed", "error")]
    if bad:
        print(f"\nmatrix: {len(bad)} failed:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
