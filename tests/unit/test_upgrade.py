"""The upgrade's pure parts: image tags, the report, refused arguments, the images' postgres ids."""

import pytest

from pgharness.errors import UpgradeError
from pgharness.image import mmdebstrap_command, upgrade_tag
from pgharness.upgrade import UpgradeReport, upgrade
from pgharness.versions import suite_for


def test_upgrade_image_tags_name_both_majors():
    assert upgrade_tag("pgharness/postgres:13", "pgharness/postgres:17") == "pgharness/upgrade:13-17"
    # A user's images: each sanitized into the tag.
    assert (
        upgrade_tag("postgres:16", "registry.example/pg:18-x")
        == "pgharness/upgrade:postgres-16-registry.example-pg-18-x"
    )


@pytest.mark.parametrize(("mode", "standbys"), [("hardlink", "rsync"), ("link", "scp")])
def test_unknown_modes_and_standby_methods_are_refused_before_anything_is_touched(mode, standbys):
    with pytest.raises(UpgradeError, match="one of"):
        upgrade(object(), 18, mode=mode, standbys=standbys)  # no cluster is needed to refuse


def test_the_report_says_what_was_done_per_node():
    report = UpgradeReport("bug123", 15, 17, "pgharness/postgres:17", "link", {"standby": "rsync"}, ["slot_a"])
    report.seconds = {"stop": 1.0, "pg_upgrade": 2.5, "start": 1.5}
    text = str(report)
    assert text.splitlines()[0] == "upgraded cluster 'bug123' from PostgreSQL 15 to 17"
    assert "primary: pg_upgrade --link (2.5 s)" in text
    assert "standby: rsync of the primary's old and new data" in text
    assert "physical slots made again: slot_a" in text
    assert text.splitlines()[-1] == "  total: 5.0 s"


def test_every_image_gives_postgres_the_same_ids():
    # One data volume serves two majors' servers in an upgrade: the user exists before the server package
    # would pick free ids, with the official images' 999.
    hooks = [arg for arg in mmdebstrap_command(suite_for(13)) if arg.startswith("--essential-hook=")]
    assert any("postgres:x:999:999:" in hook and "postgres:x:999:" in hook for hook in hooks)
