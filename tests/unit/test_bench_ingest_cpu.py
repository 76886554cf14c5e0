"""bench/ingest_cpu.py: the CPU split of a clocked window, from /proc snapshots."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_ingest_cpu", ROOT / "bench" / "ingest_cpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cpu = _load()


def _stat(pid: int, command: str, utime: int, stime: int) -> str:
    # proc(5): pid (comm) state ppid ... utime is field 14, stime field 15
    rest = ["S", "1"] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 30
    return f"{pid} ({command}) " + " ".join(rest) + "\n"


def test_parse_stat_takes_commands_with_spaces_and_parentheses() -> None:
    assert cpu.parse_stat(_stat(7, "a (b) c", 120, 30)) == ("a (b) c", 150)


def test_split_groups_named_processes_commands_and_the_rest() -> None:
    before = cpu.Snapshot(busy_ticks=1_000, total_ticks=2_000, procs={
        10: ("python", 100), 11: ("mosquitto", 50), 12: ("postgres", 5), 13: ("postgres", 7), 14: ("python", 3),
        15: ("python", 40)})
    after = cpu.Snapshot(busy_ticks=1_300, total_ticks=2_400, procs={
        10: ("python", 180),  # the receiver: 80 ticks
        11: ("mosquitto", 90),  # the broker measured, by its pid: 40
        12: ("postgres", 15), 13: ("postgres", 17),  # two backends: 20
        14: ("python", 3),  # idle: nothing
        16: ("sh", 6),  # began inside the window: all of its 6 ticks go to "other"
        15: ("bash", 9),  # pid 15 ended and a new process took its number: 9
        20: ("python", 30),  # the publisher, started inside the window
        21: ("mosquitto", 2)})  # the machine's own Mosquitto service, not the one measured: "other"
    split = cpu.split(before, after, messages=1_000, named={10: "receiver", 11: "broker", 20: "publisher"}, cores=2, tick_s=0.01)
    assert split is not None
    assert split.busy == pytest.approx(300 / 400)
    assert split.seconds["receiver"] == pytest.approx(0.8)
    assert split.seconds["broker"] == pytest.approx(0.4)
    assert split.seconds["PostgreSQL"] == pytest.approx(0.2)
    assert split.seconds["publisher"] == pytest.approx(0.3)
    assert split.seconds["other"] == pytest.approx(0.17)
    assert split.seconds["neighbour"] == 0
    assert split.per_message_us("receiver") == pytest.approx(800.0)
    assert split.cores == 2


def test_split_without_snapshots_is_none() -> None:
    snap = cpu.Snapshot(1, 2, {})
    assert cpu.split(None, snap, 1, {}) is None
    assert cpu.split(snap, None, 1, {}) is None
    assert cpu.split(snap, snap, 1, {}) is None  # no time passed


def test_snapshot_reads_a_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu  100 5 50 800 20 0 5 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(_stat(42, "mosquitto", 11, 4))
    (tmp_path / "43").mkdir()  # it ended between listing and reading: skipped
    (tmp_path / "self").mkdir()
    snap = cpu.snapshot(tmp_path)
    assert snap == cpu.Snapshot(busy_ticks=160, total_ticks=980, procs={42: ("mosquitto", 15)})
    assert cpu.snapshot(tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_snapshot_of_this_machine_holds_this_process() -> None:
    snap = cpu.snapshot()
    assert snap is not None and os.getpid() in snap.procs and snap.total_ticks > snap.busy_ticks > 0
