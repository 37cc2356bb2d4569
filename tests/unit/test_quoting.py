"""Quoting rules, Python's and the entrypoint's: every value comes back equal from the parser of where it lands."""

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from psycopg.conninfo import conninfo_to_dict

from pgharness.errors import ClusterError, QuotingError
from pgharness.quoting import (
    check_file_name,
    check_secret,
    conf_string,
    conf_value,
    conninfo,
    settings_lines,
    uri_component,
)

ENTRYPOINT = Path(__file__).resolve().parents[2] / "docker" / "pgharness.sh"

#: Any text a password or role name may be: everything but NUL and line breaks.
secrets_text = st.text(st.characters(exclude_characters="\0\n\r", codec="utf-8"), min_size=1)
ADVERSARIAL = ["a b'c\\d", '"quoted"', "$(touch pwned)", "`id`", "%p %f", "#hash", "k=v", "ümlaut ✓", "'", "\\"]


@given(password=secrets_text, user=secrets_text)
def test_conninfo_values_parse_back_equal_with_libpq(password, user):
    parsed = conninfo_to_dict(conninfo(host="primary", port=5432, user=user, password=password))
    assert parsed == {"host": "primary", "port": "5432", "user": user, "password": password}


def test_conninfo_leaves_out_none():
    assert conninfo_to_dict(conninfo(host="h", password=None)) == {"host": "h"}


@pytest.mark.parametrize("value", ADVERSARIAL)
def test_conf_string_quotes_and_escapes(value):
    quoted = conf_string(value)
    assert quoted.startswith("'")
    assert quoted.endswith("'")
    # Inside, every quote is doubled and every backslash doubled (the scanner reads backslash escapes).
    inner = quoted[1:-1]
    assert inner.replace("''", "").count("'") == 0
    assert inner.replace("\\\\", "") == value.replace("'", "''").replace("\\", "")


def test_conf_value_spells_booleans_and_numbers():
    assert conf_value(True) == "on"
    assert conf_value(False) == "off"
    assert conf_value(250) == "250"
    assert conf_value("64MB") == "'64MB'"


def test_settings_lines_refuse_a_name_that_is_not_a_setting():
    with pytest.raises(QuotingError):
        settings_lines({"work_mem = 1\nfsync": "off"})


@pytest.mark.parametrize("value", ["", "a\nb", "a\0b", "a\rb"])
def test_check_secret_refuses_what_no_quoting_carries(value):
    with pytest.raises(QuotingError):
        check_secret("POSTGRES_PASSWORD", value)


@pytest.mark.parametrize("value", ADVERSARIAL)
def test_check_secret_lets_any_other_text_through(value):
    assert check_secret("POSTGRES_PASSWORD", value) == value


@pytest.mark.parametrize("name", ["nightly", "before-delete_1.2", "B0"])
def test_plain_file_names_pass(name):
    assert check_file_name("backup name", name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "..", "../etc", "a/b", "$(touch pwned)", "a b", "-rf", "x;y"])
def test_other_file_names_are_refused(name):
    with pytest.raises(QuotingError):
        check_file_name("backup name", name)


def test_uri_component_encodes_every_reserved_character():
    assert uri_component("a b'c\\d@/:?#%") == "a%20b%27c%5Cd%40%2F%3A%3F%23%25"


def entrypoint_function(function, value):
    """The output of one of docker/pgharness.sh's quoting functions for `value` (the script sourced as a library)."""
    script = f'. "$1"; {function} "$2"'
    result = subprocess.run(
        ["sh", "-c", script, "sh", str(ENTRYPOINT), value],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PGHARNESS_LIBRARY": "1", "LC_ALL": "C.UTF-8"},
        timeout=10,
    )
    return result.stdout.decode()


@settings(max_examples=40, deadline=None)
@given(value=secrets_text)
def test_the_entrypoint_quotes_conninfo_values_as_libpq_reads_them(value):
    assert conninfo_to_dict(f"password={entrypoint_function('conninfo_value', value)}") == {"password": value}


@settings(max_examples=40, deadline=None)
@given(value=secrets_text)
def test_the_entrypoint_quotes_conf_strings_as_python_does(value):
    assert entrypoint_function("conf_string", value) == conf_string(value)


@pytest.mark.parametrize("value", ADVERSARIAL)
def test_the_entrypoint_quotes_sql_literals_and_identifiers(value):
    assert entrypoint_function("sql_literal", value) == "'" + value.replace("'", "''") + "'"
    assert entrypoint_function("sql_ident", value) == '"' + value.replace('"', '""') + '"'


@settings(max_examples=40, deadline=None)
@given(value=secrets_text)
def test_the_entrypoint_writes_settings_lines_as_python_does(value):
    # Through printf: dash's echo would read the doubled backslashes as escapes and undo them.
    assert entrypoint_function("setting primary_conninfo", value) == f"primary_conninfo = {conf_string(value)}\n"


def test_hba_fields_are_quoted_only_when_the_file_needs_it():
    from pgharness.nodeconfig import hba_field, hba_line

    # Keywords and plain names stay as written (all stays the keyword); the rest is quoted, " doubled.
    assert hba_line("host", "all", "repli", "10.0.0.0/8", "scram-sha-256") == "host all repli 10.0.0.0/8 scram-sha-256"
    assert hba_field('a "b", #c') == '"a ""b"", #c"'
    assert hba_field("with space") == '"with space"'
    for bad in ("two\nlines", "nul\0"):
        with pytest.raises(QuotingError):
            hba_field(bad)
    with pytest.raises(ClusterError):
        hba_line("host", "all")
