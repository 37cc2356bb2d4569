from pgharness.matrix import Result
from pgharness.soak import Round, evidence_folder, flake_rate, report


def test_report_lists_each_round_and_each_failure_with_its_evidence(tmp_path):
    evidence = tmp_path / "round2" / "evidence" / "tests_scenarios_test_failover.py_test_crash_a" / "pgh-1"
    evidence.mkdir(parents=True)
    flaky = Result("tests/scenarios/test_failover::test_crash[a]", "failed", "WaitTimeout: timed out\nmore")
    rounds = [
        Round(1, 61.2, 0, [Result("t::a", "passed"), Result("t::b", "skipped")]),
        Round(2, 64.9, 1, [Result("t::a", "passed"), flaky]),
    ]

    text = report(rounds, tmp_path)

    assert "- round 1: 1 passed, 1 skipped in 61 s (exit 0)" in text
    assert "- round 2: 1 failed, 1 passed in 65 s (exit 1)" in text
    assert "1 failure(s) in 2 round(s)" in text
    assert "tests/scenarios/test_failover::test_crash[a] (failed): WaitTimeout: timed out\n" in text
    assert f"  evidence: {evidence.parent}" in text
    assert "failed 1 of 2" in text


def test_a_failure_without_a_cluster_has_no_evidence(tmp_path):
    assert evidence_folder(tmp_path, Result("tests/unit/test_x::test_y", "failed")) is None


def test_a_shuffled_round_names_its_seed_and_the_report_gives_a_flake_rate(tmp_path):
    rounds = [
        Round(1, 10.0, 1, [Result("t::a", "failed", "boom"), Result("t::b", "passed"), Result("t::c", "skipped")], 41),
        Round(2, 10.0, 0, [Result("t::a", "passed"), Result("t::b", "passed")], 42),
    ]
    text = report(rounds, tmp_path)
    assert "- round 1: 1 failed, 1 passed, 1 skipped in 10 s (exit 1, seed 41)" in text
    assert "- round 1, seed 41: t::a (failed): boom" in text
    assert "flake rate: 250.0 per 1000 test runs (1 of 4)" in text


def test_no_test_run_is_an_unknown_rate_not_zero():
    assert flake_rate([Round(1, 1.0, 5, [])]) == "unknown (no test ran)"
