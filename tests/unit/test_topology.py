"""A cluster's shape and compose variables from its arguments (`pgharness.topology.plan`), without Docker."""

import pytest

from pgharness.errors import ClusterError, QuotingError
from pgharness.topology import TOPOLOGIES, plan


@pytest.mark.parametrize(
    ("kwargs", "services", "later"),
    [
        ({}, ("primary", "standby"), ()),
        ({"standbys": 0}, ("primary",), ()),
        ({"standbys": 3}, ("primary", "standby"), ("standby2", "standby3")),
        ({"topology": "archive-only"}, ("primary", "archive-standby"), ()),
        ({"topology": "slot"}, ("primary", "slot-standby"), ()),
        ({"topology": "logical", "subscribers": 2}, ("primary", "standby"), ("subscriber", "subscriber2")),
        ({"topology": "logical", "standbys": 2, "subscribers": 0}, ("primary", "standby"), ("standby2",)),
        ({"compose_services": ["primary", "pgbouncer"]}, ("primary", "pgbouncer"), ()),
    ],
)
def test_every_topology_has_its_nodes(kwargs, services, later):
    shape = plan(**kwargs)
    assert shape.services == services
    assert shape.nodes == (*services, *later)


def test_settings_go_to_every_node_and_to_single_nodes_quoted():
    shape = plan(
        topology="logical",
        settings={"work_mem": "8MB", "application_name": "it's"},
        node_settings={"standby": {"hot_standby_feedback": True}, "subscriber": ["a = 1"]},
        ports={"primary": 6433, "standby": 6435},
    )
    variables = shape.variables
    assert variables["PGHARNESS_EXTRA_SETTINGS"] == "wal_level = logical\nwork_mem = '8MB'\napplication_name = 'it''s'"
    assert variables["STANDBY_SETTINGS"] == "hot_standby_feedback = on"
    assert variables["PRIMARY_SETTINGS"] == ""
    # A node added at run time (a subscriber) takes its settings when it starts, not from compose.yaml.
    assert shape.node_settings["subscriber"] == "a = 1"
    assert "SUBSCRIBER_SETTINGS" not in variables
    assert (variables["PRIMARY_PORT"], variables["STANDBY_PORT"]) == (
        "6433",
        "6435",
    )


def test_the_callers_variables_come_first_and_its_env_wins():
    shape = plan(base={"HARNESS_IMAGE": "img", "PGHARNESS_TLS_CA": "pem"}, env={"PG_FSYNC": "on", "STANDBY_PORT": "7"})
    assert shape.variables["HARNESS_IMAGE"] == "img"
    assert shape.variables["PGHARNESS_TLS_CA"] == "pem"
    assert shape.variables["PG_FSYNC"] == "on"
    assert shape.variables["STANDBY_PORT"] == "7"
    assert "PGHARNESS_EXTRA_SETTINGS" not in shape.variables


def test_init_sql_is_carried_as_text(tmp_path):
    (tmp_path / "schema.sql").write_text("CREATE TABLE t (id int);\n")
    assert plan(init_sql=tmp_path / "schema.sql").variables["PGHARNESS_INIT_SQL"] == "CREATE TABLE t (id int);\n"


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"topology": "ring"}, f"unknown topology 'ring'; the topologies: {', '.join(TOPOLOGIES)}"),
        ({"standbys": -1}, "standbys=-1"),
        ({"topology": "slot", "standbys": 2}, "standbys=2: a streaming topology"),
        ({"subscribers": 2}, "subscribers=2: only the logical topology"),
        ({"storage": "nvme"}, "storage 'nvme': one of"),
        ({"node_settings": {"Standby": {}}}, "node_settings for 'Standby': not a node name"),
        ({"node_settings": {"standby2": {}}}, "node_settings for 'standby2': no such node in this cluster"),
        ({"standbys": 0, "node_settings": {"standby": {}}}, "(its nodes: primary)"),
    ],
)
def test_a_combination_the_harness_cannot_start_is_refused_naming_the_argument(kwargs, said):
    with pytest.raises(ClusterError) as raised:
        plan(**kwargs)
    assert said in str(raised.value)


def test_a_setting_name_no_setting_could_have_is_refused():
    with pytest.raises(QuotingError):
        plan(settings={"work mem": "1MB"})


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"standbys": "2"}, "standbys='2': a whole number"),
        ({"standbys": True}, "standbys=True: a whole number"),
        ({"topology": "logical", "subscribers": 1.5}, "subscribers=1.5: a whole number"),
        (
            {"ports": {"primry": 6433}},
            "ports for 'primry': not a compose service of this cluster (its services: primary, standby)",
        ),
        ({"ports": {"standby2": 6433}, "standbys": 2}, "ports for 'standby2': not a compose service"),
        (
            {"ports": {"standby": 6433}, "standbys": 0},
            "ports for 'standby': not a compose service of this cluster (its services: primary)",
        ),
        ({"ports": {"primary": 70000}}, "ports['primary']=70000: a port number from 1 to 65535"),
        ({"ports": {"primary": "6433"}}, "ports['primary']='6433': a port number"),
    ],
)
def test_arguments_the_cli_would_refuse_are_refused_naming_them(kwargs, says):
    with pytest.raises(ClusterError) as raised:
        plan(**kwargs)
    assert str(raised.value).startswith(says)
