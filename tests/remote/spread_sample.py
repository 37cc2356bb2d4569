"""Run by test_spread.py in a nested pytest over two engines (`--dist each`: every test on every worker).

Not collected by the suite itself (no test_ prefix): the nested run names it explicitly.
"""

import os
from pathlib import Path

from pgharness.engine import resolve


def test_replicates_on_its_engine(cluster):
    out = Path(os.environ["PGHARNESS_SPREAD_OUT"])
    worker = os.environ["PYTEST_XDIST_WORKER"]
    (out / f"{worker}.engine").write_text(resolve().url)
    (out / f"{worker}.cluster").write_text(cluster.name)
    cluster.primary.sql("CREATE TABLE t (id integer)")
    cluster.primary.sql("INSERT INTO t VALUES (1)")
    cluster.primary.wait_for_catchup(cluster.standby)
    assert cluster.standby.sql("SELECT id FROM t") == [(1,)]


def test_fails_on_purpose(cluster):
    cluster.primary.sql("CREATE TABLE t (id integer)")
    assert cluster.primary.scalar("SELECT count(*) FROM t") == 1, "failed on purpose: its evidence names the engine"
