import pytest

from pgharness.lsn import Lsn, parse_timeline_history, parse_walfile_name, previous_walfile, segment_start, walfile_name


def test_parse_and_print_round_trip():
    assert str(Lsn.parse("0/3000060")) == "0/3000060"
    assert str(Lsn.parse("16/B374D848")) == "16/B374D848"
    assert Lsn.parse("1/0").value == 1 << 32


def test_order_and_distance():
    assert Lsn.parse("0/3000060") < Lsn.parse("0/3000061") < Lsn.parse("1/0")
    assert Lsn.parse("1/0") - Lsn.parse("0/FFFFFFFF") == 1
    assert Lsn.parse("0/10") == Lsn(16)


@pytest.mark.parametrize("text", ["", "0/", "/1", "0x1/2", "1/2/3", "123456789/0", "g/0"])
def test_rejects_malformed(text):
    with pytest.raises(ValueError, match="not an LSN"):
        Lsn.parse(text)


@pytest.mark.parametrize(
    ("lsn", "tli", "expected"),
    [
        ("0/3000060", 1, "000000010000000000000003"),
        ("0/FFFFFFF", 2, "00000002000000000000000F"),
        ("1/0", 1, "000000010000000100000000"),
        ("16/B374D848", 3, "0000000300000016000000B3"),
    ],
)
def test_walfile_name_matches_pg_walfile_name(lsn, tli, expected):
    assert walfile_name(Lsn.parse(lsn), tli) == expected
    assert parse_walfile_name(expected)[0] == tli


def test_walfile_name_rejects_timeline_zero():
    with pytest.raises(ValueError, match="timelines start at 1"):
        walfile_name(Lsn(0), 0)


def test_previous_walfile_crosses_the_xlogid_boundary():
    assert previous_walfile("000000010000000000000004") == "000000010000000000000003"
    assert previous_walfile("000000020000000100000000") == "0000000200000000000000FF"


def test_previous_of_the_first_walfile_is_an_error():
    with pytest.raises(ValueError, match="first WAL file"):
        previous_walfile("000000010000000000000000")


def test_segment_start_is_the_first_lsn_of_the_file():
    assert segment_start("000000010000000000000003") == Lsn.parse("0/3000000")
    assert walfile_name(segment_start("0000000200000001000000A0"), 2) == "0000000200000001000000A0"


def test_timeline_history_gives_each_parent_its_switch_point():
    # As PostgreSQL 17 wrote it after two promotions (tab-separated, a reason per line).
    text = "1\t0/403D900\tno recovery target specified\n\n2\t0/5000A28\tno recovery target specified\n"
    assert parse_timeline_history(text) == {1: Lsn.parse("0/403D900"), 2: Lsn.parse("0/5000A28")}
    assert parse_timeline_history("# a comment\n") == {}


@pytest.mark.parametrize("line", ["1", "x\t0/1\treason", "1\tnot-an-lsn\treason"])
def test_timeline_history_refuses_a_malformed_line(line):
    with pytest.raises(ValueError, match="line 1"):
        parse_timeline_history(line)
