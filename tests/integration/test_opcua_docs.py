"""docs/opcua.md's worked example: its plant file applies, its ``opcua`` section reads a real
asyncua server with the same node ids, and its browse output is what the command prints."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import yaml
from typer.testing import CliRunner

from shopfloor.cli import app
from shopfloor.connectors.opcua import OpcUaSource
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import InMemoryRegistry
from tests.conftest import free_port
from tests.integration.opcua_server import PlcServer, ServerThread

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "opcua.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


async def test_the_plant_file_example_applies_and_reads_the_plc(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = plant_from_obj(yaml.safe_load(_blocks("yaml")[0]))
    repo = InMemoryRegistry()
    reg = RegistryService(repo)
    reg.create_tenant(PLATFORM, "acme")
    _, token = reg.create_token(PLATFORM, "t", Role.ENGINEER, tenant_slug="acme")
    result = PlantService(reg).apply(TokenAuthenticator(repo).context_for(token), spec)
    assert result.created["devices"] == 1
    section = spec.devices[0].opcua
    assert section is not None

    plc = await PlcServer(free_port(), users={"edge": "s3cret"}).start()
    monkeypatch.setenv("PLC_PRESS_01_PASSWORD", "s3cret")
    readings: list[Reading] = []

    async def sink(batch: Sequence[Reading]) -> None:
        readings.extend(batch)

    source = OpcUaSource(msgspec.structs.replace(section, endpoint=plc.url), sink, watchdog_s=0.2)
    task = asyncio.create_task(source.run())
    try:
        await source.connected(15)
        await plc.set("Pressure", 42.0)
        for _ in range(100):
            if any(r.measurement == "pressure" and r.value == pytest.approx(5.2) for r in readings):
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await plc.stop()
    assert {r.measurement for r in readings} == {"temperature", "pressure", "running", "recipe", "setpoint"}
    assert all(r.asset == "berlin/press-shop/line-1/press-01" for r in readings)
    assert any(r.measurement == "pressure" and r.value == pytest.approx(42.0 * 0.1 + 1.0) for r in readings)


def test_the_browse_example_is_what_the_command_prints() -> None:
    example = _blocks("text")[0]
    with ServerThread(PlcServer(free_port())) as plc:
        result = CliRunner().invoke(app, ["opcua", "browse", plc.url, "--depth", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    printed = [line.rstrip() for line in result.output.splitlines()]
    for line in example.strip().splitlines():
        assert line.rstrip() in printed, (line, printed)
