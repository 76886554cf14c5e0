"""Device secrets in Mosquitto's ``$7$`` (PBKDF2-SHA512) format, checked against Mosquitto itself."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.domain.credentials import (
    MOSQUITTO_ITERATIONS,
    SALT_BYTES,
    hash_secret,
    new_device_secret,
    verify_secret,
)
from tests.conftest import free_port

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def test_round_trip() -> None:
    secret = new_device_secret()
    stored = hash_secret(secret)
    assert verify_secret(secret, stored)
    assert secret not in stored


def test_format_is_mosquittos() -> None:
    stored = hash_secret("s3cret")
    empty, kind, iterations, salt, digest = stored.split("$")
    assert (empty, kind, int(iterations)) == ("", "7", MOSQUITTO_ITERATIONS)
    assert len(base64.b64decode(salt, validate=True)) == SALT_BYTES
    assert len(base64.b64decode(digest, validate=True)) == 64  # SHA-512


def test_salt_makes_every_hash_different() -> None:
    assert hash_secret("same") != hash_secret("same")
    salt = b"0123456789ab"
    assert hash_secret("same", salt=salt) == hash_secret("same", salt=salt)


def test_wrong_secret_does_not_match() -> None:
    stored = hash_secret("right")
    assert not verify_secret("wrong", stored)
    assert not verify_secret("", stored)
    assert not verify_secret("right ", stored)


def test_other_iteration_counts_verify() -> None:
    stored = hash_secret("s", iterations=1000)
    assert stored.startswith("$7$1000$")
    assert verify_secret("s", stored)


def test_new_secrets_are_random_and_long() -> None:
    secrets = {new_device_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(len(s) >= 32 for s in secrets)


GOOD = hash_secret("s3cret")


@pytest.mark.parametrize("stored", [
    "", "garbage", "$7$", "$7$101$$", "$6$101$" + GOOD.split("$", 3)[3],  # another scheme
    GOOD.replace("$7$101$", "$7$abc$"),
    GOOD.replace("$7$101$", "$7$0$"),
    GOOD.replace("$7$101$", "$7$-5$"),
    GOOD.replace("$7$101$", "$7$99999999999999$"),  # would take hours: refused, not computed
    GOOD + "$extra",
    GOOD[:-8],  # truncated digest
    GOOD.replace("$7$101$", "$7$101$!!"),  # not base64
    "s3cret",  # a plain-text password is not a hash
])
def test_malformed_stored_hash_never_matches(stored: str) -> None:
    assert verify_secret("s3cret", stored) is False


@settings(max_examples=200, deadline=None)
@given(secret=st.text(max_size=30), stored=st.text(max_size=120))
def test_verify_never_raises(secret: str, stored: str) -> None:
    assert verify_secret(secret, stored) in (True, False)


# -- against Mosquitto -----------------------------------------------------------------------

needs_passwd = pytest.mark.skipif(not Path(MOSQUITTO_PASSWD).exists(),
                                  reason=f"{MOSQUITTO_PASSWD} is not installed (apt-get install mosquitto)")


def _mosquitto_hash(tmp_path: Path, username: str, password: str) -> str:
    pwfile = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(pwfile), username, password], check=True,
                   capture_output=True, timeout=30)
    user, stored = pwfile.read_text().strip().split(":", 1)
    assert user == username
    return stored


@needs_passwd
def test_a_hash_written_by_mosquitto_passwd_verifies(tmp_path: Path) -> None:
    stored = _mosquitto_hash(tmp_path, "acme.plc-1", "correct horse battery staple")
    assert stored.startswith("$7$")
    assert verify_secret("correct horse battery staple", stored)
    assert not verify_secret("correct horse battery stapler", stored)


@needs_passwd
def test_mosquitto_passwd_and_we_agree_on_the_format(tmp_path: Path) -> None:
    theirs = _mosquitto_hash(tmp_path, "u", "pw")
    ours = hash_secret("pw")
    t_parts, o_parts = theirs.split("$"), ours.split("$")
    assert t_parts[:3] == o_parts[:3]  # "", "7", iterations
    assert [len(base64.b64decode(p)) for p in t_parts[3:]] == [len(base64.b64decode(p)) for p in o_parts[3:]]
    # and with Mosquitto's salt our code computes Mosquitto's digest
    salt = base64.b64decode(t_parts[3])
    assert hash_secret("pw", iterations=int(t_parts[2]), salt=salt) == theirs


def _connect_rc(port: int, username: str, password: str) -> int:
    """Connect with MQTT 3.1.1 and return the CONNACK return code (0: accepted)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    result: list[int] = []
    client.on_connect = lambda c, u, flags, rc, props=None: result.append(rc.value)
    client.connect("127.0.0.1", port, keepalive=10)
    deadline = time.monotonic() + 10
    while not result and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    assert result, "no CONNACK from mosquitto"
    return result[0]


@pytest.mark.integration
@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed (apt-get install mosquitto)")
def test_mosquitto_accepts_a_hash_of_ours(tmp_path: Path) -> None:
    secret = new_device_secret()
    (tmp_path / "passwd").write_text(f"acme.plc-1:{hash_secret(secret)}\n")
    port = free_port()
    (tmp_path / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
        "user root\npersistence false\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"mosquitto did not start: {out}")
                time.sleep(0.05)
        assert _connect_rc(port, "acme.plc-1", secret) == 0
        assert _connect_rc(port, "acme.plc-1", secret + "x") != 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
