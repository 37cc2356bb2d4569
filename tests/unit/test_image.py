from pgharness.image import (
    ImageRecord,
    ImageSpec,
    base_inputs,
    collectable_images,
    content_tag,
    family_of,
    mmdebstrap_command,
    sanitize_tag,
)
from pgharness.versions import suite_for


def test_tags_for_debian_builds():
    spec = ImageSpec(17)
    assert spec.tag == "pgharness/postgres:17"
    assert spec.base_tag == "pgharness/base:17-trixie"


def test_tags_for_a_user_image():
    spec = ImageSpec(17, "registry.example.com/team/postgres:16-alpine")
    assert spec.base_tag == "registry.example.com/team/postgres:16-alpine"
    assert spec.tag == "pgharness/postgres:from-registry.example.com-team-postgres-16-alpine"


def test_sanitize_tag_never_empty():
    assert sanitize_tag("///") == "image"


def test_mmdebstrap_writes_a_tarball_of_the_suite_to_stdout():
    cmd = mmdebstrap_command(suite_for(18))
    assert cmd[0] == "mmdebstrap"
    assert "--include=postgresql-18,nftables,iproute2,rsync" in cmd
    assert cmd[-2:] == ["forky", "-"]
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in cmd


def test_mirror_goes_last():
    assert mmdebstrap_command(suite_for(17), "http://mirror.invalid/debian")[-1] == "http://mirror.invalid/debian"


def test_base_inputs_change_with_what_the_base_is_made_of():
    default = base_inputs(suite_for(17), None)
    assert len(default) == 16
    assert int(default, 16) >= 0
    # The suite, the mirror and the packages each make another base.
    assert default != base_inputs(suite_for(15), None)
    assert default != base_inputs(suite_for(17), "http://mirror.invalid/debian")
    assert default != base_inputs(suite_for(17), None, ("postgresql-17", "pgbouncer"))


def test_an_image_is_tagged_by_its_inputs_beside_its_alias():
    assert content_tag("pgharness/postgres:17", "0123456789abcdef") == "pgharness/postgres:17-0123456789ab"
    assert family_of("pgharness/postgres:17-0123456789ab") == "pgharness/postgres:17"
    assert family_of("pgharness/base:17-trixie-0123456789ab") == "pgharness/base:17-trixie"
    # The alias itself, and a base's own tag, are no digest tags.
    assert family_of("pgharness/postgres:17") is None
    assert family_of("pgharness/base:17-trixie") is None
    # A tag stays within Docker's 128 characters, however long the alias.
    assert len(content_tag("pgharness/postgres:" + "x" * 200, "0" * 16).split(":")[1]) <= 128


def record(id_, *tags, created):
    return ImageRecord(id_, tags, f"2026-12-0{created}T00:00:00Z")


def test_gc_keeps_the_alias_images_in_use_and_the_two_newest_of_each_version():
    images = [
        record("a", "pgharness/postgres:17-aaaaaaaaaaaa", created=1),
        record("b", "pgharness/postgres:17-bbbbbbbbbbbb", created=2),
        record("c", "pgharness/postgres:17-cccccccccccc", "pgharness/postgres:17", created=3),
        record("d", "pgharness/postgres:17-dddddddddddd", created=4),
        record("e", "pgharness/postgres:17-eeeeeeeeeeee", created=5),
        record("f", "pgharness/postgres:15-ffffffffffff", created=1),
    ]
    # d and e are the newest two, c is what the alias names, a is used by a container: only b goes.
    assert [i.id for i in collectable_images(images, in_use={"a"})] == ["b"]
    # Nothing in use: a goes too; 15's one image stays (the newest of its version).
    assert [i.id for i in collectable_images(images, in_use=set())] == ["a", "b"]


def test_two_checkouts_alternating_keep_both_images():
    images = [
        record("main", "pgharness/postgres:17-aaaaaaaaaaaa", created=1),
        record("branch", "pgharness/postgres:17-bbbbbbbbbbbb", "pgharness/postgres:17", created=2),
    ]
    assert collectable_images(images, in_use=set()) == []
