"""Flake hunting: run the suite (or part of it) N times in a row and report every failure.

    python -m pgharness.soak --rounds 5 [--dir test-results/soak] [-- PYTEST ARGS]

Each round is a fresh pytest process with its own JUnit file and evidence
folder (``DIR/roundK.xml``, ``DIR/roundK/evidence``). At the end: one line per
round, then each failure with its round, its message and its evidence folder,
written also to ``DIR/soak.md``. Exits 1 when any round had a failure.
`make soak N=5 SOAK_ARGS="-m failover"` runs this.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pgharness.matrix import Result, read_junit
from pgharness.pytest_plugin import evidence_name


@dataclass(frozen=True)
class Round:
    number: int
    seconds: float
    exit_code: int
    results: list[Result]

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.outcome in ("failed", "error")]


def evidence_folder(directory: Path, result: Result) -> Path | None:
    """The evidence folder the plugin wrote for `result` (named after the test's node id), if any."""
    evidence = directory / "evidence"
    if not evidence.is_dir():
        return None
    # read_junit names a test module/path::name; its node id is module/path.py::name.
    folder = evidence / evidence_name(result.test.replace("::", ".py::", 1))
    return folder if folder.is_dir() else None


def report(rounds: list[Round], directory: Path) -> str:
    lines = ["# Soak", ""]
    for r in rounds:
        counts = Counter(res.outcome for res in r.results)
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no results"
        lines.append(f"- round {r.number}: {summary} in {r.seconds:.0f} s (exit {r.exit_code})")
    failures = [(r, f) for r in rounds for f in r.failures]
    lines += ["", f"{len(failures)} failure(s) in {len(rounds)} round(s)"]
    for r, f in failures:
        folder = evidence_folder(directory / f"round{r.number}", f)
        lines.append(f"- round {r.number}: {f.test} ({f.outcome}): {f.message.splitlines()[0] if f.message else ''}")
        lines.append(f"  evidence: {folder or '(none: no cluster was involved)'}")
    flaky = Counter(f.test for _, f in failures)
    if flaky:
        lines += ["", "By test:"] + [f"- {test}: failed {n} of {len(rounds)}" for test, n in flaky.most_common()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgharness.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="how many times to run the suite (default 5)")
    parser.add_argument("--dir", type=Path, default=Path("test-results/soak"), help="where results go")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    args.dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for number in range(1, args.rounds + 1):
        folder = args.dir / f"round{number}"
        junit = args.dir / f"round{number}.xml"
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--junitxml={junit}", f"--evidence-dir={folder / 'evidence'}", *args.pytest_args,
        ]  # fmt: skip
        print(f"### soak round {number}/{args.rounds}: {' '.join(cmd[2:])}", flush=True)
        start = time.monotonic()
        code = subprocess.run(cmd, check=False).returncode
        results = read_junit(junit) if junit.exists() else []
        rounds.append(Round(number, time.monotonic() - start, code, results))
        if code not in (0, 1):  # interrupted, usage error, internal error: no point in going on
            break
    text = report(rounds, args.dir)
    (args.dir / "soak.md").write_text(text)
    print(text, end="")
    return 1 if any(r.exit_code != 0 for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
