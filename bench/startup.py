"""Benchmark: the figures users feel, on real clusters. Timings live here, never in tests.

    make bench                                # 5 runs of each figure, then the suite's wall time
    python bench/startup.py --runs 10 --pg-version 17 --no-suite

Figures (median, min and max over the runs):
- image build when cached: `ensure_image` when nothing changed;
- up: primary + streaming standby + archive (`compose up --wait`), and up to
  the first row replicated;
- wait_for_catchup overhead: its time beyond the replay itself, for one small
  commit (the replay itself is timed by a tight loop on an open connection);
- promotion (`pg_promote()` to the first write accepted) and failover driven
  by the harness (SIGKILL of the primary to the first write on the promoted standby);
- archive round trip: `pg_switch_wal()` on the primary to the segment
  replayed on an archive-only standby (restore_command alone);
- down: `Cluster.destroy()` (every container, volume and network of the project);
- peak memory of each container (cgroup max usage, or sampled usage);
- up with 1 and with 5 standbys (extra standbys start together), each with the CPU-seconds the
  whole machine spent meanwhile (engine, containers and PostgreSQL included; Linux's /proc/stat);
- from the end of pytest's collection to the first scenario's setup and call;
- how many default clusters run side by side on the engine, and what stops the next;
- the default suite's wall time, serial, with pytest-xdist `-n 2` and with `-n auto` (as `make test`
  runs it; the plugin's header line says how many workers), and the machine's CPU-seconds busy
  meanwhile (on two cores, half of that work is the shortest a run can take);
- `pgharness --help`: the command line's own start (the interpreter included).

Prints the machine it ran on, a table, and writes everything to bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker.errors
import psycopg
import requests

from pgharness import Cluster, HarnessError, Lsn, Node
from pgharness.compose import docker_client
from pgharness.image import ImageSpec, ensure_image, server_version
from pgharness.load import WriteLoad
from pgharness.versions import DEFAULT_VERSION, parse_version_arg

REPOSITORY = Path(__file__).resolve().parents[1]
#: Where the nodes keep their data in the figures: as the pytest plugin has it (tmpfs); `--storage` changes it.
STORAGE = "tmpfs"
Figures = dict[str, float]
T = TypeVar("T")


def first_write(node: Node) -> float:
    """Retry an INSERT on `node` until one commits; return when it did."""
    while True:
        try:
            node.sql("INSERT INTO hoge VALUES (2)")
            return time.perf_counter()
        except psycopg.Error:
            time.sleep(0.005)


class MemoryPeaks(threading.Thread):
    """Samples the memory use of a cluster's containers until stopped; keeps each one's peak."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.peaks: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(0.2)

    def sample(self) -> None:
        try:
            containers = self.cluster.containers()
        except (docker.errors.DockerException, requests.exceptions.RequestException):  # coming up or going away
            return
        for name, container in containers.items():
            try:
                stats = container.stats(stream=False, one_shot=True)
                assert isinstance(stats, dict)  # stream=False: one answer, not an iterator
                memory = stats.get("memory_stats", {})
            except (docker.errors.DockerException, requests.exceptions.RequestException):  # it just exited
                continue
            # cgroup v1 keeps the peak itself (max_usage); v2 gives the current use only.
            used = int(memory.get("max_usage") or memory.get("usage") or 0)
            self.peaks[name] = max(self.peaks.get(name, 0), used)

    def stop(self) -> dict[str, int]:
        self.sample()
        self._done.set()
        self.join(timeout=5)
        return self.peaks


def catchup_overhead(primary: Node, standby: Node, commits: int = 15) -> tuple[float, float]:
    """(median wait_for_catchup time, median replay time) of single-row commits, in seconds."""
    primary.sql("CREATE TABLE catchup (id integer)")
    primary.wait_for_catchup(standby)
    waits, replays = [], []
    with primary.connect() as conn:
        for i in range(commits):
            conn.execute("INSERT INTO catchup VALUES (%s)", (i,))
            t0 = time.perf_counter()
            if i % 2:
                primary.wait_for_catchup(standby)
                waits.append(time.perf_counter() - t0)
            else:  # the replay itself: a tight loop on the open connection
                target = Lsn.parse(str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]))  # type: ignore[index]
                while True:
                    row = conn.execute(
                        "SELECT replay_lsn FROM pg_stat_replication WHERE application_name = 'standby'"
                    ).fetchone()
                    if row and row[0] and Lsn.parse(str(row[0])) >= target:
                        break
                replays.append(time.perf_counter() - t0)
    return statistics.median(waits), statistics.median(replays)


def streaming_run(image: str) -> tuple[Figures, dict[str, int]]:
    t0 = time.perf_counter()
    cluster = Cluster(image=image, owner="bench", storage=STORAGE)
    memory = MemoryPeaks(cluster)
    try:
        memory.start()
        cluster.start()
        t_up = time.perf_counter()
        primary, standby = cluster.primary, cluster.standby
        primary.sql("CREATE TABLE hoge (col integer)")
        primary.sql("INSERT INTO hoge VALUES (1)")
        primary.wait_for_catchup(standby)
        assert standby.sql("SELECT col FROM hoge") == [(1,)]
        t_row = time.perf_counter()
        wait, replay = catchup_overhead(primary, standby)
        # Harness-driven failover: SIGKILL the primary, promote the standby, first write accepted.
        t_kill = time.perf_counter()
        primary.kill()
        t_promote = time.perf_counter()
        standby.promote()
        t_failover = first_write(standby)
    finally:
        peaks = memory.stop()
        t_teardown = time.perf_counter()
        cluster.destroy()
    t_down = time.perf_counter()
    figures = {
        "up (primary + standby + archive, ready)": t_up - t0,
        "up + first row replicated": t_row - t0,
        "wait_for_catchup overhead": wait - replay,
        "promotion (to first write)": t_failover - t_promote,
        "failover (kill to first write)": t_failover - t_kill,
        "down (every container, volume, network)": t_down - t_teardown,
    }
    return figures, peaks


def archive_run(image: str, rounds: int = 3) -> Figures:
    """pg_switch_wal() on the primary to the segment replayed by a log-shipping standby (median of `rounds`)."""
    cluster = Cluster(image=image, owner="bench", storage=STORAGE, topology="archive-only")
    try:
        cluster.start()
        primary, standby = cluster.primary, cluster.node("archive-standby")
        primary.sql("CREATE TABLE shipped (id integer)")
        times = []
        for i in range(rounds):
            primary.sql("INSERT INTO shipped VALUES (%s)", (i,))
            t0 = time.perf_counter()
            end = Lsn.parse(str(primary.scalar("SELECT pg_switch_wal()")))
            standby.wait_for_replay(end)
            times.append(time.perf_counter() - t0)
    finally:
        cluster.destroy()
    return {"archive round trip (switch to replayed)": statistics.median(times)}


def logical_run(image: str, rows: int = 100_000, load_seconds: float = 3.0) -> Figures:
    """A subscription's initial sync of `rows` rows; then its apply lag under a steady write load
    (the median of ``pg_stat_replication.replay_lag`` of its walsender, sampled every 100 ms)."""
    cluster = Cluster(image=image, owner="bench", storage=STORAGE, topology="logical")
    try:
        cluster.start()
        publisher, subscriber = cluster.primary, cluster.node("subscriber")
        for node in (publisher, subscriber):
            node.sql("CREATE TABLE synced (id integer PRIMARY KEY, label text)")
            WriteLoad.create_table(node)
        publisher.sql("INSERT INTO synced SELECT g, md5(g::text) FROM generate_series(1, %s) g", (rows,))
        publication = publisher.publish("bench", tables=["synced", "pgharness_load"])
        t0 = time.perf_counter()
        subscription = subscriber.subscribe(publication, "bench")
        subscription.wait_for_sync(timeout=300)
        synced = time.perf_counter() - t0
        lags: list[float] = []
        query = (
            "SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication WHERE application_name = 'bench'"
        )
        with (
            WriteLoad(publisher.dsn(), workers=2, max_seconds=load_seconds + 5) as load,
            publisher.session() as session,
        ):
            load.wait_for_commits(50)
            end = time.monotonic() + load_seconds
            while time.monotonic() < end:
                lag = session.scalar(query)
                if lag is not None:
                    lags.append(float(lag))
                time.sleep(0.1)  # the sampling period of a measurement, not a wait on a condition
        subscription.wait_for_catchup()
    finally:
        cluster.destroy()
    return {
        f"logical initial sync of {rows:,} rows": synced,
        "logical apply lag under write load": statistics.median(lags) if lags else float("nan"),
    }


def machine_busy() -> float | None:
    """CPU-seconds the whole machine has spent busy since boot (user, nice, system, irq and softirq time of
    /proc/stat's first line); None where there is no /proc/stat: unknown, never zero."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def measured(action: Callable[[], T]) -> tuple[T, float, float | None]:
    """What `action` returns, the seconds it took, and the machine's busy CPU-seconds meanwhile (None when
    unknown)."""
    busy = machine_busy()
    t0 = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - t0
    after = machine_busy()
    return result, seconds, None if busy is None or after is None else after - busy


def timed(action: Callable[[], object]) -> float:
    return measured(action)[1]


def standbys_up(image: str, standbys: int, storage: str | None = None) -> tuple[float, float | None]:
    """Seconds to a ready cluster of a primary and `standbys` streaming standbys, and the machine's busy
    CPU-seconds meanwhile (None when unknown)."""
    cluster = Cluster(image=image, owner="bench", storage=storage or STORAGE, standbys=standbys)
    _, seconds, busy = measured(cluster.start)  # a start that fails removes what it made
    cluster.destroy()
    return seconds, busy


def standby_figures(image: str, standbys: int) -> Figures:
    """`standbys_up` as figures: its seconds, and its machine CPU-seconds when known."""
    label = f"up: primary + {standbys} standby{'' if standbys == 1 else 's'} (standbys={standbys})"
    seconds, cpu = standbys_up(image, standbys)
    figures = {label: seconds}
    if cpu is not None:
        figures[f"{label}: machine CPU-s busy"] = cpu
    return figures


def side_by_side(image: str, limit: int = 40) -> tuple[int, str]:
    """How many default clusters run at once on this engine (up to `limit`), and what stopped the next one."""
    alive: list[Cluster] = []
    stopped = f"reached the bench's limit of {limit}"
    try:
        while len(alive) < limit:
            cluster = Cluster(image=image, owner="bench", storage=STORAGE)
            try:
                cluster.start()
            except HarnessError as e:
                stopped = str(e).splitlines()[0]
                break
            alive.append(cluster)
    finally:
        for cluster in alive:
            cluster.destroy()
    return len(alive), stopped


def cli_help() -> float:
    """Seconds for ``pgharness --help`` (the installed command, as a user types it)."""
    command = Path(sys.executable).with_name("pgharness")
    t0 = time.perf_counter()
    subprocess.run([str(command), "--help"], check=True, stdout=subprocess.DEVNULL, timeout=60)
    return time.perf_counter() - t0


def first_test_timings(pg_version: str) -> dict[str, float]:
    """Seconds from the end of collection to the first scenario's setup, and to its call (its cluster up)."""
    out = REPOSITORY / "bench" / ".first-test.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "first_test", "--pg-version",
           pg_version, "tests/scenarios/test_streaming.py", "-x"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY / "bench"), "PGHARNESS_BENCH_FIRST_TEST": str(out)}
    subprocess.run(cmd, cwd=REPOSITORY, check=False, stdout=subprocess.DEVNULL, env=env, timeout=600)
    timings = json.loads(out.read_text())
    out.unlink()
    return {"collection end to the first scenario's setup": timings["setup"],
            "collection end to the first scenario's call": timings["call"]}  # fmt: skip


def suite_wall_time(pg_version: str, pg_image: str, workers: int | str | None) -> tuple[float, float | None, str]:
    """Seconds for the default suite (`pytest`, as `make test` runs it), serial or on `workers` xdist workers
    (``"auto"``: as `make test` chooses them), the machine's busy CPU-seconds meanwhile (None when unknown),
    and the plugin's ``-n auto`` header line ("" without one)."""
    # Not -q: it drops the report header, where the plugin says how many workers -n auto chose.
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--pg-version", pg_version]
    if pg_image:
        cmd += ["--pg-image", pg_image]
    if workers:
        cmd += ["-n", str(workers)]
    print(f"### suite: {' '.join(cmd[2:])}", flush=True)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=REPOSITORY, check=False, stdout=subprocess.PIPE, text=True)

    result, seconds, busy = measured(run)
    if result.returncode != 0:
        print(f"### suite exited {result.returncode}: its time is reported all the same", flush=True)
    header = re.search(r"^pgharness: (-n auto: .*)$", result.stdout, re.MULTILINE)
    return seconds, busy, header.group(1) if header else ""


def summarize(runs: list[Figures]) -> dict[str, dict[str, float]]:
    return {
        phase: {
            "median": statistics.median(r[phase] for r in runs),
            "min": min(r[phase] for r in runs),
            "max": max(r[phase] for r in runs),
        }
        for phase in runs[0]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg-version", default=str(DEFAULT_VERSION))
    parser.add_argument("--pg-image", default="")
    parser.add_argument("--no-suite", action="store_true", help="skip the suite's three runs (about 7 minutes here)")
    parser.add_argument("--json", default="bench/results.json", help="where to write the figures as JSON")
    parser.add_argument("--storage", choices=("tmpfs", "volume"), default="tmpfs", help="where the nodes keep data")
    args = parser.parse_args()
    global STORAGE
    STORAGE = args.storage
    spec = ImageSpec(parse_version_arg(args.pg_version), args.pg_image or None)
    try:
        image = ensure_image(spec)
        runs: list[Figures] = []
        peaks: dict[str, int] = {}
        for _ in range(args.runs):
            figures, memory = streaming_run(image)
            figures["image build when cached"] = timed(lambda: ensure_image(spec))
            figures |= archive_run(image)
            figures |= logical_run(image)
            figures |= standby_figures(image, 1)
            figures["up: primary + 1 standby, data on disk (storage=volume)"] = standbys_up(image, 1, "volume")[0]
            figures |= standby_figures(image, 5)
            figures |= first_test_timings(args.pg_version)
            figures["pgharness --help"] = cli_help()
            runs.append(figures)
            peaks = {name: max(peaks.get(name, 0), used) for name, used in memory.items()}
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    machine = {
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "docker": docker_client().version().get("Version"),
        "postgres": server_version(image),
        "image": image,
        "storage": STORAGE,
    }
    figures_summary = summarize(runs)
    clusters, stopped = side_by_side(image)
    suite: dict[str, Any] = {}
    if not args.no_suite:
        for key, workers in (("serial", None), ("xdist_2", 2), ("xdist_auto", "auto")):
            seconds, busy, header = suite_wall_time(args.pg_version, args.pg_image, workers)
            suite |= {f"{key}_s": seconds} | ({f"{key}_busy_cpu_s": busy} if busy is not None else {})
            suite |= {"auto_workers": header} if header else {}
        suite |= {"speedup": suite["serial_s"] / suite["xdist_2_s"]}

    print(", ".join(f"{k}: {v}" for k, v in machine.items()) + f"; {args.runs} runs")
    print(f"{'figure':<52} {'median':>8} {'min':>8} {'max':>8}")
    for phase, f in figures_summary.items():
        print(f"{phase:<52} {f['median']:>7.3f}s {f['min']:>7.3f}s {f['max']:>7.3f}s")
    for name, used in sorted(peaks.items()):
        print(f"{'peak memory of ' + name:<52} {used / 2**20:>6.0f}MiB")
    print(f"{'clusters side by side on this engine':<52} {clusters:>8}  (then: {stopped})")
    if suite:
        cores = os.cpu_count() or 1
        auto = re.search(r"\S+ workers", suite.get("auto_workers", ""))  # the header line: "-n auto: 4 workers, ..."
        for label, key, extra in (
            ("default suite, serial", "serial", ""),
            ("default suite, pytest -n 2", "xdist_2", f"  ({suite['speedup']:.2f}x)"),
            ("default suite, pytest -n auto (make test)", "xdist_auto", f"  ({auto.group(0) if auto else '?'})"),
        ):
            busy = suite.get(f"{key}_busy_cpu_s")
            work = f"  machine busy {busy:.0f} of {cores * suite[f'{key}_s']:.0f} CPU-s" if busy is not None else ""
            print(f"{label:<52} {suite[f'{key}_s']:>7.0f}s{extra}{work}")
    result = {
        "machine": machine,
        "runs": args.runs,
        "seconds": figures_summary,
        "peak_memory_bytes": peaks,
        "side_by_side": {"clusters": clusters, "stopped_by": stopped},
        "suite": suite,
    }
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
