"""Run by test_alarms_crash.py in a subprocess: a platform with rules running, killed by SIGKILL
right after ingest commits a hot reading and before the rules evaluate it.

argv: store data_dir [dsn schema]. Prints "evaluated <seq>" after the first (normal) reading was
evaluated; then commits the hot reading and dies inside the commit listener.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from shopfloor.bootstrap import run_alarms
from tests.integration.alarm_helpers import HOT_RULE, make_plant, settings_for, telemetry, wait_for


async def main() -> None:
    store, data_dir = sys.argv[1], Path(sys.argv[2])
    pg = (sys.argv[3], sys.argv[4]) if store == "postgres" else None
    plant = make_plant(settings_for(store, data_dir, pg, alarm_tick_s=0.2))
    p = plant.platform
    async with run_alarms(p) as service:
        ops = p.alarm_ops()
        assert ops is not None
        await ops.create_rule(plant.ctx, dict(HOT_RULE))
        await p.ingest.submit_messages(telemetry("press-01", [70.0]))
        await wait_for(lambda: service.seq == p.historian.last_seq(), what="evaluation")
        print(f"evaluated {service.seq}", flush=True)
        # the alarm service was told first (it only wakes); this listener kills the process before
        # the rules thread gets to the commit
        p.ingest.on_commit(lambda seq, live: os.kill(os.getpid(), signal.SIGKILL))
        await p.ingest.submit_messages(telemetry("press-01", [95.0]))
        await asyncio.sleep(30)
        print("still alive", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
