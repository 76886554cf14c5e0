"""``shopfloor opcua browse`` against a real asyncua server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.connectors.opcua import OpcUaAuthError
from tests.conftest import free_port
from tests.integration.opcua_server import PlcServer, ServerThread

pytestmark = pytest.mark.integration


def test_browse_prints_the_address_space_as_a_tree() -> None:
    with ServerThread(PlcServer(free_port())) as plc:
        runner = CliRunner()
        result = runner.invoke(app, ["opcua", "browse", plc.url, "--depth", "2"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        out = result.output
        assert "Objects i=85" in out
        assert "Press ns=2;s=Press" in out
        assert "2:Temperature ns=2;s=Press.Temperature Double = 20.0" in out
        assert "2:Recipe ns=2;s=Press.Recipe String = 'P1'" in out
        assert "Server" not in out  # namespace 0 is left out unless --standard

        as_json = runner.invoke(app, ["opcua", "browse", plc.url, "--json"], env={"COLUMNS": "200"})
        assert as_json.exit_code == 0, as_json.output
        tree = json.loads(as_json.output)
        press = next(c for c in tree["children"] if c["node_id"] == "ns=2;s=Press")
        counter = next(c for c in press["children"] if c["browse_name"] == "2:Counter")
        assert counter == {"browse_name": "2:Counter", "node_id": "ns=2;s=Press.Counter", "node_class": "Variable",
                           "data_type": "Int32", "value": 0, "status": "Good"}

        shallow = runner.invoke(app, ["opcua", "browse", plc.url, "--depth", "1"], env={"COLUMNS": "200"})
        assert shallow.exit_code == 0 and "Temperature" not in shallow.output and "…" in shallow.output


def test_browse_with_a_wrong_password_says_so() -> None:
    with ServerThread(PlcServer(free_port(), users={"edge": "s3cret"})) as plc:
        runner = CliRunner()
        result = runner.invoke(app, ["opcua", "browse", plc.url, "--user", "edge", "--password", "nope"])
        assert result.exit_code != 0
        assert isinstance(result.exception, OpcUaAuthError)
        assert "refused the user" in result.exception.message
