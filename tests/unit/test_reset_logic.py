"""What the shared cluster's reset reads and says (no Docker): differences between two states of a node,
and which archived files belong to timelines a test made."""

from pgharness.archive import files_of_timelines_above
from pgharness.shared import NodeState, differences


def state(**changes):
    base = {
        "in_recovery": True,
        "timeline": 1,
        "receiver": "streaming",
        "replay_paused": False,
        "state": {
            "roles": ("postgres", "repli"),
            "settings files": ("primary_conninfo = host=primary password=s3cret",),
        },
    }
    return NodeState(**{**base, **changes})


def test_the_same_state_has_no_differences():
    assert differences(state(), state(), name="standby") == []


def test_a_promotion_a_new_timeline_a_lost_receiver_and_a_paused_replay_are_each_named():
    assert differences(state(), state(in_recovery=False, replay_paused=None), name="standby") == [
        "standby is a primary now"
    ]
    assert differences(state(), state(timeline=2), name="standby") == ["standby is on timeline 2, not 1"]
    assert differences(state(), state(receiver=None), name="standby") == [
        "standby's WAL receiver is not running, not streaming"
    ]
    assert differences(state(), state(replay_paused=True), name="standby") == ["standby's replay is paused"]


def test_a_changed_list_names_what_is_new_and_what_is_gone():
    after = state(state={**state().state, "roles": ("postgres", "intruder")})
    assert differences(state(), after, name="primary") == ["primary's roles changed (new: intruder; gone: repli)"]


def test_a_changed_setting_is_named_without_its_value():
    after = state(state={**state().state, "settings files": ("primary_conninfo = host=other password=s3cret",)})
    [difference] = differences(state(), after, name="standby")
    assert difference == "standby's settings files changed (other values: primary_conninfo)"
    assert "s3cret" not in difference


def test_the_files_of_timelines_above_one_are_segments_partials_backups_and_histories():
    archive = [
        "000000010000000000000003",
        "000000010000000000000004.partial",
        "000000010000000000000003.00000028.backup",
        "00000002.history",
        "000000020000000000000004",
        "000000020000000000000004.partial",
        "000000020000000000000004.00000060.backup",
        "0000000A0000000000000001",
        ".missing.000000020000000000000005",
        "archive_status",
    ]
    assert files_of_timelines_above(archive, 1) == [
        "00000002.history",
        "000000020000000000000004",
        "000000020000000000000004.partial",
        "000000020000000000000004.00000060.backup",
        "0000000A0000000000000001",
    ]
    assert files_of_timelines_above(archive, 2) == ["0000000A0000000000000001"]
