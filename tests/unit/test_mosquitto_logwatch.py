"""Counting Mosquitto's rejects from its log: the pure parser on captured lines, and the file tail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shopfloor.connectors.mosquitto import logwatch
from shopfloor.connectors.mosquitto.logwatch import LogWatch, RejectCounter, count_rejects

# Captured from Mosquitto 2.0.11 (log_type all, log_timestamp_format %Y-%m-%dT%H:%M:%S): a device
# connects, three wrong secrets (MQTT 3.1.1), one unknown user (MQTT 5), four publishes outside the
# device's prefix, one inside.
CAPTURED = """\
2026-11-23T18:05:03: mosquitto version 2.0.11 starting
2026-11-23T18:05:03: Config loaded from /tmp/t/mosquitto/mosquitto.conf.
2026-11-23T18:05:03: Opening ipv4 listen socket on port 43415.
2026-11-23T18:05:03: mosquitto version 2.0.11 running
2026-11-23T18:05:03: New connection from 127.0.0.1:39122 on port 43415.
2026-11-23T18:05:03: Client <unknown> closed its connection.
2026-11-23T18:05:03: New connection from 127.0.0.1:46621 on port 43415.
2026-11-23T18:05:03: New client connected from 127.0.0.1:46621 as press-01-plc (p2, c1, k30, u'acme.dev1').
2026-11-23T18:05:03: No will message specified.
2026-11-23T18:05:03: Sending CONNACK to press-01-plc (0, 0)
2026-11-23T18:05:03: New connection from 127.0.0.1:46415 on port 43415.
2026-11-23T18:05:03: Sending CONNACK to 127.0.0.1 (0, 5)
2026-11-23T18:05:03: Client <unknown> disconnected, not authorised.
2026-11-23T18:05:04: New connection from 127.0.0.1:36241 on port 43415.
2026-11-23T18:05:04: Sending CONNACK to 127.0.0.1 (0, 5)
2026-11-23T18:05:04: Client <unknown> disconnected, not authorised.
2026-11-23T18:05:05: New connection from 127.0.0.1:39117 on port 43415.
2026-11-23T18:05:05: Sending CONNACK to 127.0.0.1 (0, 5)
2026-11-23T18:05:05: Client <unknown> disconnected, not authorised.
2026-11-23T18:05:06: New connection from 127.0.0.1:54119 on port 43415.
2026-11-23T18:05:06: Sending CONNACK to 127.0.0.1 (0, 135)
2026-11-23T18:05:06: Client <unknown> disconnected, not authorised.
2026-11-23T18:05:07: Denied PUBLISH from press-01-plc (d0, q1, r0, m1, 'shopfloor/v1/acme/s1/a1/l1/m2/telemetry', ... (1 bytes))
2026-11-23T18:05:07: Sending PUBACK to press-01-plc (m1, rc135)
2026-11-23T18:05:07: Denied PUBLISH from press-01-plc (d0, q1, r0, m2, 'shopfloor/v1/acme/s1/a1/l1/m2/telemetry', ... (1 bytes))
2026-11-23T18:05:07: Sending PUBACK to press-01-plc (m2, rc135)
2026-11-23T18:05:07: Denied PUBLISH from press-01-plc (d0, q1, r0, m3, 'shopfloor/v1/acme/s1/a1/l1/m2/telemetry', ... (1 bytes))
2026-11-23T18:05:07: Sending PUBACK to press-01-plc (m3, rc135)
2026-11-23T18:05:07: Denied PUBLISH from press-01-plc (d0, q1, r0, m4, 'shopfloor/v1/acme/s1/a1/l1/m2/telemetry', ... (1 bytes))
2026-11-23T18:05:07: Sending PUBACK to press-01-plc (m4, rc135)
2026-11-23T18:05:07: Received PUBLISH from press-01-plc (d0, q1, r0, m5, 'shopfloor/v1/acme/s1/a1/l1/m1/telemetry', ... (2 bytes))
2026-11-23T18:05:07: Sending PUBACK to press-01-plc (m5, rc0)
2026-11-23T18:05:07: Received DISCONNECT from press-01-plc
2026-11-23T18:05:07: Client press-01-plc disconnected.
2026-11-23T18:05:07: mosquitto version 2.0.11 terminating
"""

# Also captured: Mosquitto's default epoch timestamps, an MQTT 5 device, a QoS 0 denial (no PUBACK),
# a reload that cuts a rotated device, and a client without a username (refused).
CAPTURED_EPOCH = """\
1795456839: New client connected from 127.0.0.1:36029 as d2 (p5, c1, k30, u'acme.dev2').
1795456839: No will message specified.
1795456839: Sending CONNACK to d2 (0, 0)
1795456840: Denied PUBLISH from d2 (d0, q1, r0, m3, 'shopfloor/v1/acme/s1/a1/l1/m1/telemetry', ... (2 bytes))
1795456840: Sending PUBACK to d2 (m3, rc135)
1795456840: Denied PUBLISH from d2 (d0, q0, r0, m0, 'other/topic', ... (2 bytes))
1795456841: Reloading config.
1795456841: Client d2 disconnected.
1795456842: New connection from 127.0.0.1:49749 on port 47197.
1795456842: Sending CONNACK to 127.0.0.1 (0, 5)
1795456842: Client <unknown> disconnected, not authorised.
"""


def test_captured_log_counts_refused_logins_per_address_and_denied_publishes_per_user() -> None:
    rejects = count_rejects(CAPTURED.splitlines())
    assert rejects.by_kind == {"login_refused": 4, "publish_denied": 4}
    assert rejects.login_refused_by_address == {"127.0.0.1": 4}
    assert rejects.publish_denied_by_username == {"acme.dev1": 4}
    assert rejects.publish_denied_by_client == {"press-01-plc": 4}


def test_epoch_timestamps_qos0_denials_and_reload_cuts() -> None:
    rejects = count_rejects(CAPTURED_EPOCH.splitlines(keepends=True))
    assert rejects.publish_denied_by_username == {"acme.dev2": 2}  # QoS 0 is denied too, silently
    assert rejects.login_refused_by_address == {"127.0.0.1": 1}  # a reload cut is not a refused login


def test_lines_without_timestamps_are_read_too() -> None:
    lines = [line.partition(": ")[2] for line in CAPTURED.splitlines()]
    assert count_rejects(lines) == count_rejects(CAPTURED.splitlines())


def test_a_refused_login_without_debug_lines_is_counted_without_an_address() -> None:
    lines = [line for line in CAPTURED.splitlines() if "CONNACK" not in line]
    assert count_rejects(lines).login_refused_by_address == {"?": 4}


def test_the_refusing_connack_only_names_the_line_right_after_it() -> None:
    rejects = count_rejects([
        "Sending CONNACK to 10.0.0.7 (0, 5)",
        "New connection from 10.0.0.8:5000 on port 1883.",
        "Client <unknown> disconnected, not authorised.",
        "Sending CONNACK to 10.0.0.9 (0, 0)",  # accepted: nothing pending
        "Client <unknown> disconnected, not authorised.",
        "Sending CONNACK to ::1 (0, 135)",
        "Client <unknown> disconnected, not authorised.",
    ])
    assert rejects.login_refused_by_address == {"?": 2, "::1": 1}


def test_an_unknown_client_id_is_counted_under_a_question_mark() -> None:
    rejects = count_rejects(["Denied PUBLISH from ghost (d0, q1, r0, m1, 'a/b', ... (2 bytes))"])
    assert rejects.publish_denied_by_username == {"?": 1}
    assert rejects.publish_denied_by_client == {"ghost": 1}


def test_client_ids_with_spaces_and_parentheses_and_hostile_topics() -> None:
    cid = "plc (line 1) u'x'"
    rejects = count_rejects([
        f"New client connected from 10.1.1.1:4000 as {cid} (p2, c1, k60, u'acme.plc').",
        f"Denied PUBLISH from {cid} (d0, q1, r0, m1, 'shopfloor/v1/x', ... (2 bytes))",
        # a topic made to look like the end of the line: still that client's denial, never another's
        f"Denied PUBLISH from {cid} (d0, q1, r0, m2, 'a', ... (1 bytes)) (d0, q0, r0, m0, 'b', ... (2 bytes))",
    ])
    assert rejects.publish_denied_by_client == {cid: 1, f"{cid} (d0, q1, r0, m2, 'a', ... (1 bytes))": 1}
    assert rejects.publish_denied_by_username == {"acme.plc": 1, "?": 1}


def test_a_client_id_reused_by_another_user_is_attributed_to_the_latest() -> None:
    counter = RejectCounter().feed_all([
        "New client connected from 10.0.0.1:1 as plc (p2, c1, k30, u'acme.a').",
        "New client connected from 10.0.0.2:1 as plc (p2, c1, k30, u'acme.b').",
        "Denied PUBLISH from plc (d0, q1, r0, m1, 't', ... (2 bytes))",
        "New client connected from 10.0.0.3:1 as anon (p2, c1, k30).",
    ])
    assert counter.rejects().publish_denied_by_username == {"acme.b": 1}
    assert counter.username("anon") == ""


def test_learning_without_counting() -> None:
    counter = RejectCounter()
    for line in CAPTURED.splitlines():
        counter.feed(line, count=False)
    assert counter.rejects().by_kind == {"login_refused": 0, "publish_denied": 0}
    assert counter.username("press-01-plc") == "acme.dev1"


def test_the_client_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logwatch, "_MAX_CLIENTS", 3)
    counter = RejectCounter()
    for i in range(5):
        counter.feed(f"New client connected from 10.0.0.1:1 as c{i} (p2, c1, k30, u'u{i}').")
    assert [counter.username(f"c{i}") for i in range(5)] == [None, None, "u2", "u3", "u4"]


# --- LogWatch: tailing the file ------------------------------------------------------------------


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def test_tail_counts_only_new_lines_but_learns_from_old_ones(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    head, _, tail = CAPTURED.partition("2026-11-23T18:05:07: Denied")
    log.write_text(head)
    watch = LogWatch(log)
    assert watch.poll() == 0
    assert watch.rejects().by_kind == {"login_refused": 0, "publish_denied": 0}  # written before we came
    append(log, "2026-11-23T18:05:07: Denied" + tail)
    assert watch.poll() == tail.count("\n")
    assert watch.rejects().publish_denied_by_username == {"acme.dev1": 4}


def test_tail_from_start_counts_everything(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    log.write_text(CAPTURED)
    watch = LogWatch(log, from_start=True)
    watch.poll()
    assert watch.rejects() == count_rejects(CAPTURED.splitlines())


def test_tail_waits_for_a_line_to_be_complete(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    watch = LogWatch(log)
    assert watch.poll() == 0  # no file yet
    log.write_text("")
    watch.poll()
    append(log, "Sending CONNACK to 10.0.0.1 (0, 5)\nClient <unknown> disconnected, not auth")
    assert watch.poll() == 1
    assert watch.rejects().by_kind["login_refused"] == 0
    append(log, "orised.\n")
    assert watch.poll() == 1
    assert watch.rejects().login_refused_by_address == {"10.0.0.1": 1}


def test_tail_follows_a_rename_and_a_truncation(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    refused = "Sending CONNACK to 10.0.0.1 (0, 5)\nClient <unknown> disconnected, not authorised.\n"
    log.write_text("")
    watch = LogWatch(log)
    watch.poll()
    append(log, refused)
    os.rename(log, tmp_path / "mosquitto.log.1")
    append(tmp_path / "mosquitto.log.1", refused)  # written before Mosquitto reopened its log
    assert watch.poll() == 4  # the renamed file is read to its end; no new file yet
    append(log, refused * 2)  # Mosquitto reopened (SIGHUP): a new file
    assert watch.poll() == 4
    assert watch.rejects().by_kind["login_refused"] == 4
    log.write_text("")  # copytruncate; what follows is shorter than what was read (polls are frequent)
    append(log, refused)
    watch.poll()
    assert watch.rejects().by_kind["login_refused"] == 5


def test_tail_starting_mid_file_skips_the_partial_first_line(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    log.write_text("x" * 100 + "\n" + CAPTURED)
    watch = LogWatch(log, learn_bytes=len(CAPTURED) + 10)
    watch.poll()
    assert watch.counter.username("press-01-plc") == "acme.dev1"
    assert watch.rejects().by_kind == {"login_refused": 0, "publish_denied": 0}


async def test_run_polls_until_cancelled(tmp_path: Path) -> None:
    import asyncio

    log = tmp_path / "mosquitto.log"
    log.write_text("")
    watch = LogWatch(log)
    task = asyncio.create_task(watch.run(every_s=0.01))
    await asyncio.sleep(0.05)
    append(log, "Denied PUBLISH from x (d0, q0, r0, m0, 't', ... (1 bytes))\n")
    for _ in range(100):
        if watch.rejects().by_kind["publish_denied"]:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watch.rejects().publish_denied_by_client == {"x": 1}
