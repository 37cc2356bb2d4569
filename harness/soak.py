"""Flake hunting: run the suite (or part of it) N times in a row and report every failure::

    python -m pgharness.soak --rounds 5 [--shuffle [--seed N]] [--dir test-results/soak] [-- PYTEST ARGS]

Each round is a fresh pytest process with its own JUnit file and evidence
folder (``DIR/roundK.xml``, ``DIR/roundK/evidence``). With ``--shuffle`` each
round runs the tests in an order of its own (pytest-random-order, one global
bucket), from a seed printed with the round: ``--seed N`` replays round 1 of a
run that printed N (round K uses N + K - 1). At the end: one line per round,
the failures per thousand test runs, then each failure with its round, seed,
message and evidence folder, written also to ``DIR/soak.md``. Exits 1 when any
round had a failure. `make soak N=5 SHUFFLE=1 SOAK_ARGS="-m failover"` runs this.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pgharness.fixtures import evidence_name
from pgharness.matrix import Result, read_junit


@dataclass(frozen=True)
class Round:
    number: int
    seconds: float
    exit_code: int
    results: list[Result]
    #: The order's seed of a shuffled round (None: pytest's own order).
    seed: int | None = None

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
        seed = f", seed {r.seed}" if r.seed is not None else ""
        lines.append(f"- round {r.number}: {summary} in {r.seconds:.0f} s (exit {r.exit_code}{seed})")
    failures = [(r, f) for r in rounds for f in r.failures]
    lines += ["", f"{len(failures)} failure(s) in {len(rounds)} round(s)"]
    lines.append(f"flake rate: {flake_rate(rounds)}")
    for r, f in failures:
        folder = evidence_folder(directory / f"round{r.number}", f)
        seed = f", seed {r.seed}" if r.seed is not None else ""
        message = f.message.splitlines()[0] if f.message else ""
        lines.append(f"- round {r.number}{seed}: {f.test} ({f.outcome}): {message}")
        lines.append(f"  evidence: {folder or '(none: no cluster was involved)'}")
    flaky = Counter(f.test for _, f in failures)
    if flaky:
        lines += ["", "By test:"] + [f"- {test}: failed {n} of {len(rounds)}" for test, n in flaky.most_common()]
    return "\n".join(lines) + "\n"


def flake_rate(rounds: list[Round]) -> str:
    """Failures per thousand test runs (skipped ones not counted), with the counts it comes from; 'unknown'
    when no test ran (no result is not zero failures)."""
    ran = sum(1 for r in rounds for res in r.results if res.outcome != "skipped")
    failed = sum(len(r.failures) for r in rounds)
    if ran == 0:
        return "unknown (no test ran)"
    return f"{1000 * failed / ran:.1f} per 1000 test runs ({failed} of {ran})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgharness.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="how many times to run the suite (default 5)")
    parser.add_argument("--dir", type=Path, default=Path("test-results/soak"), help="where results go")
    parser.add_argument("--shuffle", action="store_true", help="each round in an order of its own")
    parser.add_argument("--seed", type=int, help="with --shuffle: round 1's seed (default: a random one)")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.seed is not None and not args.shuffle:
        parser.error("--seed needs --shuffle")
    first_seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    args.dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    for number in range(1, args.rounds + 1):
        folder = args.dir / f"round{number}"
        junit = args.dir / f"round{number}.xml"
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            f"--junitxml={junit}", f"--evidence-dir={folder / 'evidence'}", *args.pytest_args,
        ]  # fmt: skip
        seed = first_seed + number - 1 if args.shuffle else None
        if seed is not None:
            # Every pytest-xdist worker must collect the same order: the seed is given, never drawn by each.
            cmd += ["--random-order-bucket=global", f"--random-order-seed={seed}"]
        print(f"### soak round {number}/{args.rounds}: {' '.join(cmd[2:])}", flush=True)
        start = time.monotonic()
        code = subprocess.run(cmd, check=False).returncode
        results = read_junit(junit) if junit.exists() else []
        rounds.append(Round(number, time.monotonic() - start, code, results, seed))
        if code not in (0, 1):  # interrupted, usage error, internal error: no point in going on
            break
    text = report(rounds, args.dir)
    (args.dir / "soak.md").write_text(text)
    print(text, end="")
    return 1 if any(r.exit_code != 0 for r in rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
