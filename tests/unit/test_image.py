from pgharness.image import ImageSpec, base_inputs, mmdebstrap_command, sanitize_tag
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
    assert "--include=postgresql-18,nftables,rsync" in cmd
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
