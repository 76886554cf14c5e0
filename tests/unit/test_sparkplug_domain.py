"""Sparkplug in the domain: group ids from tenant slugs, the mapping section, broker rights of an edge
node (embedded broker checks and Mosquitto ACL lines), worker slices, values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shopfloor.connectors.mosquitto.config import BrokerConfigError, DeviceAccount, acl_file
from shopfloor.connectors.mosquitto.manager import accounts_from_registry, usable_accounts
from shopfloor.domain.assets import ValueType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.records import Quality
from shopfloor.domain.sparkplug import (
    MetricMap,
    SparkplugNode,
    SparkplugSpec,
    check_group,
    check_spec,
    device_grants,
    granted_nodes,
    group_tenant,
    groups_of_worker,
    node_grant,
    publish_allowed,
    receive_allowed,
    sample_quality,
    sample_value,
    spec_from_obj,
    spec_to_obj,
    subscribe_allowed,
    worker_for_group,
)
from shopfloor.testing.fakes import InMemoryRegistry

M1 = "shopfloor/v1/acme/berlin/press-shop/line-1/press-01"
EDGE = (M1, node_grant("acme", "gw-1"))


# -- group ids ---------------------------------------------------------------------------------------

def test_group_ids_belong_to_exactly_one_tenant() -> None:
    assert check_group("acme", "acme") == "acme"
    assert check_group("acme.north", "acme") == "acme.north"
    assert group_tenant("acme.north") == group_tenant("acme") == "acme"
    for bad in ("globex", "acme.", "acme.a.b", "acme.a b", "acmex", "acme.+", ""):
        with pytest.raises(InvalidInput):
            check_group(bad, "acme")


# -- the mapping section -------------------------------------------------------------------------------

def test_mapping_reads_names_maps_and_left_out_metrics() -> None:
    spec = spec_from_obj({"edge_node": "GW-1", "node": "s/a/l/m", "devices": {"Press 1": "s/a/l/m2"},
                          "metrics": {"Oil/Temp": {"measurement": "temperature", "scale": 0.1},
                                      "Force": "force", "Debug": None}})
    assert spec.metric_map("Oil/Temp") == MetricMap("temperature", 0.1)
    assert spec.metric_map("Force") == MetricMap("force")
    assert spec.metric_map("Debug") is None
    assert spec.metric_map("temperature") == MetricMap("temperature")  # unlisted: its own name
    assert spec_from_obj(spec_to_obj(spec)) == spec
    assert spec_to_obj(SparkplugSpec()) == {}
    check_spec(spec, "x")


@pytest.mark.parametrize("obj", [
    {"edge_node": "has space"}, {"edge_node": "a/b"}, {"devices": {"d": "s/a/l"}}, {"devices": {"a+b": "s/a/l/m"}},
    {"node": "s/a/l/m/x"}, {"metrics": {"x": {"measurement": "t", "scale": float("inf")}}}, {"metrics": {"": "t"}},
])
def test_bad_mappings_are_refused(obj: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        check_spec(spec_from_obj(obj), "x")


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown"):
        spec_from_obj({"edge": "x"})


# -- broker rights ---------------------------------------------------------------------------------------

def test_an_edge_node_publishes_only_its_own_births_data_and_deaths() -> None:
    for topic in ("spBv1.0/acme/NBIRTH/gw-1", "spBv1.0/acme/NDATA/gw-1", "spBv1.0/acme/NDEATH/gw-1",
                  "spBv1.0/acme/DBIRTH/gw-1/Press 1", "spBv1.0/acme/DDATA/gw-1/d", "spBv1.0/acme/DDEATH/gw-1/d",
                  M1 + "/telemetry"):
        assert publish_allowed(topic, EDGE), topic
    for topic in ("spBv1.0/acme/NCMD/gw-1", "spBv1.0/acme/DCMD/gw-1/d", "spBv1.0/STATE/shopfloor",
                  "spBv1.0/acme/NBIRTH/gw-2", "spBv1.0/globex/NBIRTH/gw-1", "spBv1.0/acme/NBIRTH/gw-1/d",
                  "spBv1.0/acme/DDATA/gw-1", "spBv1.0/acme/DDATA/gw-1/+", "spBv1.0/acme/+/gw-1",
                  "spBv1.0/acme/DDATA/gw-1/d/e", "spBv1.0/acme/NDATA/gw-1/", "spBv1.0/acme/BOGUS/gw-1"):
        assert not publish_allowed(topic, EDGE), topic


def test_an_edge_node_receives_its_commands_and_the_hosts_state() -> None:
    for topic in ("spBv1.0/acme/NCMD/gw-1", "spBv1.0/acme/DCMD/gw-1/d", "spBv1.0/STATE/shopfloor", M1 + "/command"):
        assert receive_allowed(topic, EDGE), topic
    for topic in ("spBv1.0/acme/NCMD/gw-2", "spBv1.0/acme/NDATA/gw-1", "spBv1.0/acme/DCMD/gw-1",
                  "spBv1.0/STATE/a/b"):
        assert not receive_allowed(topic, EDGE), topic
    assert not receive_allowed("spBv1.0/STATE/shopfloor", (M1,))  # only edge nodes care


def test_an_edge_node_subscribes_to_its_commands_and_state_only() -> None:
    for f in ("spBv1.0/acme/NCMD/gw-1", "spBv1.0/acme/NCMD/gw-1/#", "spBv1.0/acme/DCMD/gw-1/#",
              "spBv1.0/acme/DCMD/gw-1/+", "spBv1.0/STATE/#", "spBv1.0/STATE/+", "spBv1.0/STATE/shopfloor", M1 + "/#"):
        assert subscribe_allowed(f, EDGE), f
    for f in ("spBv1.0/#", "spBv1.0/acme/#", "spBv1.0/acme/+/gw-1", "spBv1.0/+/NCMD/gw-1", "spBv1.0/acme/NCMD/+",
              "spBv1.0/acme/NDATA/gw-1", "spBv1.0/acme/NCMD/gw-2", "spBv1.0/STATE/a/b", "#"):
        assert not subscribe_allowed(f, EDGE), f


def test_grants_come_from_the_binding_else_the_devices_name() -> None:
    assert device_grants("acme", "gw-1", None) == (("acme", "gw-1"),)
    bound = SparkplugNode(1, 2, "acme.north", "Edge-7")
    assert device_grants("acme", "gw-1", bound) == (("acme.north", "Edge-7"),)
    assert granted_nodes([M1, node_grant("acme.north", "Edge-7")]) == {("acme.north", "Edge-7")}


def test_mosquitto_acl_of_an_edge_node() -> None:
    dev = DeviceAccount("acme.gw-1", "$7$101$c2FsdA==$aGFzaA==", (M1,), sparkplug=(("acme", "gw-1"),))
    acl = acl_file([dev])
    assert acl.endswith(
        "user acme.gw-1\n"
        f"topic readwrite {M1}/#\n"
        "topic write spBv1.0/acme/NBIRTH/gw-1\ntopic write spBv1.0/acme/NDATA/gw-1\n"
        "topic write spBv1.0/acme/NDEATH/gw-1\ntopic write spBv1.0/acme/DBIRTH/gw-1/+\n"
        "topic write spBv1.0/acme/DDATA/gw-1/+\ntopic write spBv1.0/acme/DDEATH/gw-1/+\n"
        "topic read spBv1.0/acme/NCMD/gw-1\ntopic read spBv1.0/acme/DCMD/gw-1/+\ntopic read spBv1.0/STATE/+\n")


@pytest.mark.parametrize("node", [("acme", "a b"), ("acme", "+"), ("ac#me", "x"), ("acme", "x\nuser admin"),
                                  ("acme", "")])
def test_nothing_can_be_injected_through_sparkplug_ids(node: tuple[str, str]) -> None:
    dev = DeviceAccount("acme.gw-1", "$7$101$c2FsdA==$aGFzaA==", (), sparkplug=(node,))
    with pytest.raises(BrokerConfigError):
        acl_file([dev])
    assert usable_accounts([dev]) == []


def test_accounts_from_the_registry_carry_the_edge_node() -> None:
    repo = InMemoryRegistry()
    t = repo.create_tenant("acme", "ACME").id
    a = repo.create_device(t, "gw-1", "acme.gw-1", "h", [])
    repo.create_device(t, "plc-1", "acme.plc-1", "h", [])
    repo.set_sparkplug_node(t, a.id, SparkplugNode(t, a.id, "acme.north", "Edge-7"))
    accounts = {acc.username: acc for acc in accounts_from_registry(repo)}
    assert accounts["acme.gw-1"].sparkplug == (("acme.north", "Edge-7"),)
    assert accounts["acme.plc-1"].sparkplug == (("acme", "plc-1"),)


# -- worker slices ---------------------------------------------------------------------------------------

def test_worker_slices_are_stable_and_cover_every_group_once() -> None:
    groups = [f"t{i}" for i in range(50)] + ["acme", "acme.north"]
    slices = [groups_of_worker(groups, i, 3) for i in range(3)]
    assert sorted(g for s in slices for g in s) == sorted(groups)
    assert all(len(s) > 8 for s in slices)  # fifty-two groups spread evenly over three workers
    lower = [f"plant-{i}" for i in range(40)]  # similar names do not crowd into one worker either
    assert all(len(groups_of_worker(lower, i, 2)) > 10 for i in range(2))
    assert worker_for_group("acme", 4) == 0 and worker_for_group("globex", 4) == 3  # the same everywhere
    assert worker_for_group("acme", 1) == 0
    with pytest.raises(ValueError):
        worker_for_group("acme", 0)


@given(st.text(min_size=1), st.integers(1, 64))
def test_every_group_has_one_worker(group: str, workers: int) -> None:
    assert 0 <= worker_for_group(group, workers) < workers


# -- values ---------------------------------------------------------------------------------------------

def test_values_by_measurement_type() -> None:
    scaled = MetricMap("t", scale=0.1, offset=-2)
    assert sample_value(ValueType.NUMERIC, 215, scaled) == pytest.approx((19.5, None))
    assert sample_value(ValueType.NUMERIC, 1.5, MetricMap("t")) == (1.5, None)
    assert isinstance(sample_value(ValueType.NUMERIC, True, MetricMap("t")), str)
    assert isinstance(sample_value(ValueType.NUMERIC, "1", MetricMap("t")), str)
    assert isinstance(sample_value(ValueType.NUMERIC, float("nan"), MetricMap("t")), str)
    assert isinstance(sample_value(ValueType.NUMERIC, 10**400, MetricMap("t")), str)
    assert sample_value(ValueType.BOOLEAN, True, MetricMap("b")) == (1.0, None)
    assert sample_value(ValueType.BOOLEAN, 0, MetricMap("b")) == (0.0, None)
    assert isinstance(sample_value(ValueType.BOOLEAN, 2, MetricMap("b")), str)
    assert sample_value(ValueType.STRING, "x" * 2000, MetricMap("s")) == (None, "x" * 1024)
    assert isinstance(sample_value(ValueType.STRING, 1, MetricMap("s")), str)


def test_sparkplug_quality() -> None:
    assert sample_quality(None) == sample_quality(192) == Quality.GOOD
    assert sample_quality(0) == Quality.BAD
    assert sample_quality(500) == sample_quality(7) == Quality.UNCERTAIN
