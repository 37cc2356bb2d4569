"""A major-version upgrade through logical replication: nothing the application wrote is lost or doubled."""

import pytest

from pgharness.image import ImageSpec, ensure_image
from pgharness.load import WriteLoad
from pgharness.versions import SUITES


def test_an_upgrade_to_the_next_version_loses_and_duplicates_nothing(cluster_factory, pg_major):
    newer = [version for version in sorted(SUITES) if version > pg_major]
    if not newer:
        pytest.skip(f"no version newer than {pg_major} to upgrade to")
    # The publisher runs this run's version; the subscriber, the next one (its own image, built once).
    cluster = cluster_factory(topology="logical", subscribers=0)
    publisher = cluster.primary
    subscriber = cluster.add_primary("upgraded", image=ensure_image(ImageSpec(newer[0])))
    for node in (publisher, subscriber):
        WriteLoad.create_table(node)

    # The application writes on the old version while the new one copies and follows ...
    publication = publisher.publish("upgrade", tables=["pgharness_load"])
    with WriteLoad(publisher.dsn(), workers=2) as load:
        load.wait_for_commits(100)
        subscription = subscriber.subscribe(publication, "upgrade")
        subscription.wait_for_sync()
        load.wait_for_commits(load.log.count() + 100)
    # ... then stops; the subscriber catches up, and the application switches to it.
    subscription.wait_for_catchup()
    subscription.disable()
    assert load.log.lost_commits(subscriber) == set()
    rows, distinct = subscriber.sql("SELECT count(*), count(DISTINCT (worker, seq)) FROM pgharness_load")[0]
    assert rows == distinct == load.log.count()
