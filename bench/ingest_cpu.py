"""Where the CPU went while one ingest figure was clocked: the machine's busy share and each role's
CPU time per message (Linux ``/proc``; elsewhere nothing is measured).

A snapshot reads every process's user + system time and the machine's busy and total time; two
snapshots (at the first PUBLISH and when the store had committed the last message) give the window's
split. Processes are grouped into roles: the ones the bench names (its broker, the receiving side,
the publisher, a neighbour), PostgreSQL's backends by their name, and the rest of the machine as
"other" (the bench's own polling, the kernel, among others writing back the files of the figure
before, and whatever else the shared box runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

#: The roles, in the order the report shows them.
ROLES = ("broker", "receiver", "PostgreSQL", "publisher", "neighbour", "other")

#: Processes named by their command rather than by the bench (the brokers are named by their pid:
#: the machine's own Mosquitto service is not the one measured).
_BY_COMMAND = {"postgres": "PostgreSQL"}


@dataclass(frozen=True)
class Snapshot:
    busy_ticks: int  # the machine's non-idle time over all cores, in clock ticks
    total_ticks: int
    procs: dict[int, tuple[str, int]]  # pid -> (command, user + system ticks)


@dataclass(frozen=True)
class CpuSplit:
    """The machine's busy share (of all its cores) and each role's CPU seconds in one window."""

    busy: float  # 0..1 of all cores
    cores: int
    seconds: dict[str, float]
    messages: int

    def per_message_us(self, role: str) -> float:
        return self.seconds.get(role, 0.0) / max(self.messages, 1) * 1e6


def snapshot(proc: Path = PROC) -> Snapshot | None:
    """Every process's CPU time so far, and the machine's; None where ``/proc`` is missing."""
    try:
        first = (proc / "stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    procs: dict[int, tuple[str, int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        procs[int(entry.name)] = parse_stat(text)
    return Snapshot(sum(ticks) - idle, sum(ticks), procs)


def parse_stat(text: str) -> tuple[str, int]:
    """(command, user + system ticks) from one ``/proc/<pid>/stat`` line (the command may hold
    spaces and parentheses: it runs from the first "(" to the last ")")."""
    command = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return command, int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def split(before: Snapshot | None, after: Snapshot | None, messages: int, named: dict[int, str],
          cores: int | None = None, tick_s: float | None = None) -> CpuSplit | None:
    """The window between two snapshots: ``named`` maps the bench's own processes to their role;
    a process that began inside the window counts all its time."""
    if before is None or after is None or after.total_ticks <= before.total_ticks:
        return None
    tick = tick_s if tick_s is not None else 1 / os.sysconf("SC_CLK_TCK")
    seconds = dict.fromkeys(ROLES, 0.0)
    for pid, (command, used) in after.procs.items():
        earlier = before.procs.get(pid)
        spent = used - (earlier[1] if earlier is not None and earlier[0] == command else 0)
        if spent > 0:
            role = named.get(pid) or _BY_COMMAND.get(command, "other")
            seconds[role] += spent * tick
    busy = (after.busy_ticks - before.busy_ticks) / (after.total_ticks - before.total_ticks)
    return CpuSplit(busy, cores or os.cpu_count() or 1, seconds, messages)
