from pgharness.matrix import main, read_junit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.scenarios.test_streaming" name="test_row" time="1.0"/>
<testcase classname="tests.scenarios.test_versions" name="test_incremental" time="0.1">
  <skipped type="pytest.skip" message="needs PostgreSQL &gt;=17; this run has PostgreSQL {v}"/></testcase>
<testcase classname="tests.scenarios.test_backup" name="test_lag" time="2.0">{extra}</testcase>
</testsuite></testsuites>
"""


def write(tmp_path, version, extra=""):
    (tmp_path / f"pg{version}.xml").write_text(JUNIT.format(v=version, extra=extra))


def test_read_junit_outcomes(tmp_path):
    write(tmp_path, 13, '<failure message="assert 1 == 2">trace</failure>')
    results = {r.test: r for r in read_junit(tmp_path / "pg13.xml")}
    assert results["tests/scenarios/test_streaming::test_row"].outcome == "passed"
    assert results["tests/scenarios/test_versions::test_incremental"].outcome == "skipped"
    assert results["tests/scenarios/test_backup::test_lag"].outcome == "failed"


def test_table_has_a_cell_per_scenario_and_version(tmp_path, capsys):
    write(tmp_path, 17)
    write(tmp_path, 13)
    assert main([str(tmp_path)]) == 0
    table = (tmp_path / "matrix.md").read_text()
    assert "| scenario | PG 13 | PG 17 |" in table
    assert "| tests/scenarios/test_versions::test_incremental | skip | skip |" in table
    assert "| **total** | 2 passed, 1 skipped | 2 passed, 1 skipped |" in table
    assert (tmp_path / "matrix.xml").read_text().count("<testsuite ") == 2
    assert table in capsys.readouterr().out


def test_a_failure_fails_the_matrix_and_is_named(tmp_path, capsys):
    write(tmp_path, 15, '<error message="boom"/>')
    assert main([str(tmp_path)]) == 1
    assert "PG 15: tests/scenarios/test_backup::test_lag" in capsys.readouterr().err
    assert "| tests/scenarios/test_backup::test_lag | ERROR |" in (tmp_path / "matrix.md").read_text()


def test_no_results_is_an_error(tmp_path):
    assert main([str(tmp_path)]) == 1
