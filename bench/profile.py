"""Benchmark: where the default suite's CPU goes. Timings live here, never in tests.

    make bench                                  # the startup figures, then this profile
    python bench/profile.py                     # the default suite (-n auto), profiled
    python bench/profile.py -- tests/scenarios/test_streaming.py   # other pytest arguments
    python bench/profile.py --compare HEAD~5 --pairs 2             # this checkout against a commit
    python bench/profile.py --serial                               # in one process: each file's own CPU

On two cores the suite is CPU-bound: its wall time is its CPU work over the cores. The profile runs the
suite once, as `make test` does, and reports:

- how many clusters the pytest processes started, by kind (fresh, shared, shared started afresh, spare,
  other), and how many nodes tests added;
- the machine's busy CPU-seconds (Linux's /proc/stat), in total, per test and per cluster start, split by
  what spent them: PostgreSQL and everything else inside containers (the engine's ``docker`` cgroup), the
  engine's daemons (dockerd, containerd), the harness's own Python (each pytest process's own CPU),
  the child processes of pytest (compose, docker, a child test run; their CPU once reaped), and the rest
  (container shims, runc, the kernel's network and file-system work, anything else running);
- the ten scenario files with the most summed test time (setup, call and teardown), with their share;
  with ``--serial`` (``-n 0``: one process runs every test, so what the machine spends while a test runs is
  that test's), the ten files that cost the machine the most CPU-seconds, with their share and per test.

``--compare REV`` runs the suite alternately in this checkout and in REV's (a git worktree, with its own
virtual environment and images), ``--pairs`` times each, A B A B: a machine whose speed drifts is compared
within one run. Each side's CPU per test is reported run by run, with the ratio pair by pair.

Each mode writes its own results, so that one mode's run does not replace another's: bench/profile-results.json
(the default suite), bench/profile-serial-results.json (``--serial``), bench/profile-compare-results.json
(``--compare``, both sides' runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cpu_profile import machine_busy  # bench/, this script's folder, is first on sys.path

REPOSITORY = Path(__file__).resolve().parents[1]
CATEGORIES = (
    ("containers", "PostgreSQL and the tools in containers"),
    ("engine", "the engine's daemons (dockerd, containerd)"),
    ("harness", "the harness's Python (pytest processes)"),
    ("children", "pytest's child processes (compose, docker, child runs)"),
    ("rest", "the rest (shims, runc, kernel, other)"),
)
ENGINE_DAEMONS = ("dockerd", "containerd")


def containers_cpu() -> float | None:
    """CPU-seconds spent inside the engine's containers since it started (its cgroup, which keeps what
    removed containers spent); None when the cgroup is not where the cgroupfs driver puts it."""
    v1 = Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    v2 = Path("/sys/fs/cgroup/docker/cpu.stat")
    if v2.exists():
        usage = dict(line.split() for line in v2.read_text().splitlines())
        return int(usage["usage_usec"]) / 1e6
    return None


def daemons_cpu() -> float:
    """CPU-seconds the engine's daemons have spent (their own, and their reaped children's)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in ENGINE_DAEMONS:
            fields = text[text.rindex(")") + 2 :].split()
            total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def snapshot() -> dict[str, float | None]:
    return {"busy": machine_busy(), "containers": containers_cpu(), "engine": daemons_cpu(), "children": children_cpu()}


def engine_events(since: float, until: float) -> dict[str, int]:
    """The engine's events between two moments (``docker events --since --until``, which returns once it
    has listed them), tallied by type and action."""
    listing = subprocess.run(
        ["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--format", "{{.Type}} {{.Action}}"],
        check=True, stdout=subprocess.PIPE, text=True, timeout=60,
    ).stdout  # fmt: skip
    counts: dict[str, int] = {}
    for line in listing.splitlines():
        key = line.split(":", 1)[0]  # "container exec_start: sh -c ..." -> "container exec_start"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def python_of(checkout: Path) -> str:
    """The interpreter that runs `checkout`'s suite: this checkout's own (the one running this script), or
    the other's virtual environment, made by its own `make venv` once. Each side imports its own harness
    and its own command, as its `make test` would: a checkout from before the package's rename (63352ba)
    imports ``harness``, and a child ``pgharness`` process must be that checkout's, not this one's."""
    if checkout == REPOSITORY:
        return sys.executable
    python = checkout / ".venv" / "bin" / "python"
    if not python.exists():
        print(f"### {checkout}: make venv", flush=True)
        subprocess.run(["make", "-C", str(checkout), "venv", f"PYTHON={sys.executable}"], check=True,
                       stdout=subprocess.DEVNULL, timeout=900)  # fmt: skip
    return str(python)


def run_suite(checkout: Path, pytest_args: list[str], *, quiet: bool = False) -> dict[str, Any]:
    """Run pytest in `checkout` with `pytest_args`, profiled; return the profile."""
    with tempfile.TemporaryDirectory(prefix="pgharness-profile-") as folder:
        env = {**os.environ, "PYTHONPATH": str(REPOSITORY / "bench"), "PGHARNESS_BENCH_PROFILE": folder}
        cmd = [python_of(checkout), "-m", "pytest", "-p", "no:cacheprovider", "-p", "cpu_profile", "-q", *pytest_args]
        print(f"### {checkout}: pytest {' '.join(cmd[3:])}", flush=True)
        before, started, since = snapshot(), time.perf_counter(), time.time()
        result = subprocess.run(cmd, cwd=checkout, env=env, check=False, stdout=subprocess.PIPE, text=True)
        wall, after = time.perf_counter() - started, snapshot()
        events = engine_events(since, time.time())
        if not quiet:
            lines = result.stdout.rstrip().splitlines() or ["(no output)"]
            for line in [*(x for x in lines if x.startswith(("FAILED", "ERROR"))), lines[-1]]:
                print(line, flush=True)
        if result.returncode != 0:  # the failures' tracebacks, which the summary lines above cut short
            kept = REPOSITORY / "test-results" / f"profile-{checkout.name}-{time.strftime('%Y%m%dT%H%M%S')}.txt"
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(result.stdout)
            print(f"(pytest's whole output: {kept.relative_to(REPOSITORY)})", flush=True)
        processes = [json.loads(p.read_text()) for p in Path(folder).glob("*.json")]
    delta = {k: None if before[k] is None or after[k] is None else after[k] - before[k] for k in before}  # type: ignore[operator]
    harness = sum(p["self_cpu_s"] for p in processes)
    spent: dict[str, float | None] = {
        "containers": delta["containers"],
        "engine": delta["engine"],
        "harness": harness,
        "children": None if delta["children"] is None else delta["children"] - harness,
    }
    known = [v for v in spent.values() if v is not None]
    spent["rest"] = None if len(known) < len(spent) or delta["busy"] is None else delta["busy"] - sum(known)
    starts: dict[str, int] = {}
    nodes: dict[str, int] = {}
    requests: dict[str, int] = {}
    by_file: dict[str, float] = {}
    # Only a serial run's figures are a file's own: with workers, each saw the others' work too.
    runners = [p for p in processes if p.get("machine_cpu_s_by_file")]
    machine_by_file = runners[0]["machine_cpu_s_by_file"] if len(runners) == 1 else {}
    for process in processes:
        for kind, count in process["cluster_starts"].items():
            starts[kind] = starts.get(kind, 0) + count
        for kind, count in process["nodes_added"].items():
            nodes[kind] = nodes.get(kind, 0) + count
        for endpoint, count in process["engine_requests"].items():
            requests[endpoint] = requests.get(endpoint, 0) + count
        for name, seconds in process["test_seconds_by_file"].items():
            by_file[name] = by_file.get(name, 0.0) + seconds
    return {
        "checkout": str(checkout),
        "exit": result.returncode,
        "wall_s": wall,
        "busy_cpu_s": delta["busy"],
        "cores": os.cpu_count(),
        "tests": sum(p["tests"] for p in processes),
        "cluster_starts": starts,
        "nodes_added": nodes,
        "cpu_s": spent,
        "test_seconds_by_file": by_file,
        "engine_requests": requests,
        "engine_events": events,
        "machine_cpu_s_by_file": machine_by_file,
        "tests_by_file": {k: v for p in processes for k, v in p.get("tests_by_file", {}).items()},
    }


def per(value: float | None, count: int) -> str:
    return "unknown" if value is None or count == 0 else f"{value / count:.3f}"


def report(profile: dict[str, Any]) -> None:
    tests, starts = profile["tests"], sum(profile["cluster_starts"].values())
    busy = profile["busy_cpu_s"]
    print(f"\nsuite: {tests} tests in {profile['wall_s']:.0f} s (exit {profile['exit']}); machine busy {busy:.0f} "
          f"of {profile['cores'] * profile['wall_s']:.0f} CPU-s")  # fmt: skip
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(profile["cluster_starts"].items()))
    added = ", ".join(f"{kind} {n}" for kind, n in sorted(profile["nodes_added"].items())) or "none"
    print(f"clusters started: {starts} ({kinds}); nodes added by tests: {added}\n")
    print(f"{'CPU-seconds spent by':<56} {'total':>8} {'per test':>9} {'per start':>10}")
    for key, label in CATEGORIES:
        value = profile["cpu_s"][key]
        total = "unknown" if value is None else f"{value:.0f}"
        print(f"{label:<56} {total:>8} {per(value, tests):>9} {per(value, starts):>10}")
    print(f"{'the whole machine':<56} {busy:>8.0f} {per(busy, tests):>9} {per(busy, starts):>10}\n")
    print(
        "engine requests of the pytest processes (top 12):",
        ", ".join(f"{k} {v}" for k, v in sorted(profile["engine_requests"].items(), key=lambda kv: -kv[1])[:12]),
    )
    print("engine events (top 12):", ", ".join(f"{k} {v}" for k, v in list(profile["engine_events"].items())[:12]))
    print()
    by_file = profile["test_seconds_by_file"]
    whole = sum(by_file.values()) or 1.0
    print(f"{'scenario file (summed test time)':<56} {'seconds':>8} {'share':>9}")
    for name, seconds in sorted(by_file.items(), key=lambda kv: -kv[1])[:10]:
        print(f"{name:<56} {seconds:>8.0f} {seconds / whole:>8.0%}")
    machine = profile.get("machine_cpu_s_by_file") or {}
    if machine:
        counts = profile.get("tests_by_file") or {}
        spent = sum(machine.values()) or 1.0
        print(f"\n{'scenario file (machine CPU-s while it ran, serial)':<56} {'CPU-s':>8} {'share':>9} {'per test':>9}")
        for name, seconds in sorted(machine.items(), key=lambda kv: -kv[1])[:10]:
            print(f"{name:<56} {seconds:>8.0f} {seconds / spent:>8.0%} {per(seconds, counts.get(name, 0)):>9}")


def worktree(rev: str) -> Path:
    """A git worktree of `rev` beside this checkout (made once, reused)."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPOSITORY, check=True, text=True,
                            stdout=subprocess.PIPE).stdout.strip()  # fmt: skip
    path = Path(tempfile.gettempdir()) / f"pgharness-compare-{commit}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=REPOSITORY, check=True)
    return path


def compare(rev: str, pairs: int, pytest_args: list[str]) -> dict[str, Any]:
    """This checkout (A) against `rev` (B), alternated A B A B; each side warmed up first (its images)."""
    other = worktree(rev)
    sides = {"A": REPOSITORY, "B": other}
    for checkout in sides.values():  # builds each side's images: not part of any measured run
        run_suite(checkout, ["tests/scenarios/test_readonly.py"], quiet=True)
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for _ in range(pairs):
        for side, checkout in sides.items():
            runs[side].append(run_suite(checkout, pytest_args))
    print(f"\nA: this checkout; B: {rev} ({other})")
    # Per test, and in total: two checkouts seldom run the same tests, and cheap tests added lower the first.
    head = ("pair", "A CPU-s/test", "B CPU-s/test", "A/B", "A CPU-s", "B CPU-s", "A/B", "A tests", "B tests")
    print(f"{head[0]:<6}" + "".join(f"{h:>13}" for h in head[1:]) + f"{'A wall':>8}{'B wall':>8}")
    ratios, totals = [], []
    for i, (a, b) in enumerate(zip(runs["A"], runs["B"], strict=True), 1):
        a_per, b_per = a["busy_cpu_s"] / a["tests"], b["busy_cpu_s"] / b["tests"]
        ratios.append(a_per / b_per)
        totals.append(a["busy_cpu_s"] / b["busy_cpu_s"])
        cells = (a_per, b_per, a_per / b_per, a["busy_cpu_s"], b["busy_cpu_s"], totals[-1])
        counts = f"{a['tests']:>13}{b['tests']:>13}{a['wall_s']:>7.0f}s{b['wall_s']:>7.0f}s"
        print(f"{i:<6}" + "".join(f"{c:>13.3f}" for c in cells) + counts)
        failed = [side for side, run in (("A", a), ("B", b)) if run["exit"] != 0]
        if failed:
            print(f"       (pair {i}: {' and '.join(failed)} had failures: a failed test's waits skew its figures)")
    print(f"median A/B: {statistics.median(ratios):.2f} per test, {statistics.median(totals):.2f} in total")
    return {"rev": rev, "runs": runs, "ratios": ratios, "total_ratios": totals}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", metavar="REV", help="alternate this checkout with REV's (a git worktree)")
    parser.add_argument("--pairs", type=int, default=2, help="with --compare: A B pairs (default 2)")
    parser.add_argument("--keep-worktree", action="store_true", help="with --compare: leave REV's worktree")
    parser.add_argument("--serial", action="store_true", help="run the suite in one process (-n 0): adds each "
                        "file's own machine CPU-seconds")  # fmt: skip
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest's arguments (default: -n auto)")
    args = parser.parse_args()
    pytest_args = args.pytest_args or ["-n", "auto"]
    if args.serial:  # after the others: pytest's last -n wins
        pytest_args = [*pytest_args, "-n", "0"]
    mode = "-compare" if args.compare else "-serial" if args.serial else ""
    out = REPOSITORY / "bench" / f"profile{mode}-results.json"
    if args.compare:
        results = compare(args.compare, args.pairs, pytest_args)
        for run in results["runs"]["A"]:
            report(run)
        if not args.keep_worktree:
            path = Path(results["runs"]["B"][0]["checkout"])
            subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=REPOSITORY, check=False)
    else:
        results = run_suite(REPOSITORY, pytest_args)
        report(results)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten to {out.relative_to(REPOSITORY)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
