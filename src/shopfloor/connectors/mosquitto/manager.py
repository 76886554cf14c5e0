"""Keep a Mosquitto broker in step with the registry: write its files, reload it, optionally run it.

``MosquittoManager.sync()`` builds the password and ACL files from the registry, writes each one
atomically (temp file + rename, so Mosquitto never reads half a file) only when its text changed,
and then sends the broker SIGHUP. ``watch()`` does that whenever the registry's version changes.

What a reload does in Mosquitto 2.0.11 (checked by tests/integration/test_mosquitto_registry.py):

* every connected client is checked again against the new password file, with the password it
  logged in with: a device that was removed (disabled, deleted) or whose secret was rotated is
  disconnected at once, and its reconnect is refused. A client whose password still matches stays
  connected (a re-salted hash of the same secret does not cut anyone).
* a changed ACL applies to the next publish and the next delivery, without a disconnect.
* the log file is reopened (so renaming it and sending SIGHUP rotates it).
* a password file that cannot be read leaves nobody able to log in, and cuts everyone: hence the
  atomic writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.sparkplug import device_grants
from shopfloor.domain.topics import asset_prefix
from shopfloor.ports.registry import RegistryRepository

from .config import (
    BrokerConfigError,
    BrokerOptions,
    DeviceAccount,
    ServiceUser,
    acl_file,
    check_hash,
    check_prefix,
    check_sparkplug_node,
    check_username,
    mosquitto_conf,
    password_file,
)
from .logwatch import LogWatch

_log = logging.getLogger(__name__)

CONF_FILE = "mosquitto.conf"
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"
LOG_FILE = "mosquitto.log"
PID_FILE = "mosquitto.pid"
STDERR_FILE = "mosquitto.stderr"
DATA_DIR = "data"


class MosquittoError(ShopfloorError):
    """Mosquitto could not be started, stopped or reloaded."""

    status = 503
    title = "MQTT broker unavailable"


class Versioned(Protocol):
    def version(self) -> int: ...


def accounts_from_registry(repo: RegistryRepository) -> list[DeviceAccount]:
    """Every device of every tenant, with the topic prefixes of the assets it is bound to and the
    Sparkplug edge node it may publish as (its binding's, else the one named like it in its
    tenant's group: see ``domain.sparkplug``)."""
    out: list[DeviceAccount] = []
    nodes = {n.device_id: n for n in repo.list_sparkplug_nodes()}
    for tenant in repo.list_tenants():
        paths = {a.id: a.path for a in repo.list_assets(tenant.id)}
        for dev in repo.list_devices(tenant.id):
            prefixes = tuple(asset_prefix(tenant.slug, paths[a]) for a in dev.asset_ids if a in paths)
            sparkplug = device_grants(tenant.slug, dev.name, nodes.get(dev.id))
            out.append(DeviceAccount(dev.username, dev.secret_hash, prefixes, enabled=dev.enabled,
                                     sparkplug=sparkplug))
    return out


def usable_accounts(accounts: Iterable[DeviceAccount], reserved: Iterable[str] = ()) -> list[DeviceAccount]:
    """Enabled accounts that can be written safely; any other is left out (and logged), not fatal."""
    taken = set(reserved)
    out = []
    for acc in accounts:
        if not acc.enabled:
            continue
        try:
            check_username(acc.username)
            check_hash(acc.secret_hash, acc.username)
            for p in acc.prefixes:
                check_prefix(p, acc.username)
            for group, edge_node in acc.sparkplug:
                check_sparkplug_node(group, edge_node, acc.username)
            if acc.username in taken:
                raise BrokerConfigError(f"broker username {acc.username!r} is taken")
        except BrokerConfigError as exc:
            _log.error("device left out of the Mosquitto files: %s", exc.message)
            continue
        taken.add(acc.username)
        out.append(acc)
    return out


class MosquittoManager:
    """Writes Mosquitto's files from the registry and reloads the broker when they change.

    ``accounts`` returns the current devices (``accounts_from_registry(repo)`` by default through
    ``for_registry``). The broker to reload is, in this order: the child started by ``start()``,
    ``pid``, the pid in ``pid_file``, the pid Mosquitto wrote next to the generated config;
    or ``reload_command`` is run instead (e.g. ``["systemctl", "reload", "mosquitto"]``).
    """

    def __init__(self, conf_dir: Path, accounts: Callable[[], Iterable[DeviceAccount]], *,
                 service_users: Sequence[ServiceUser] = (), options: BrokerOptions | None = None,
                 pid: int | None = None, pid_file: Path | None = None,
                 reload_command: Sequence[str] | None = None, binary: str = "mosquitto",
                 data_dir: Path | None = None, log_file: Path | None = None,
                 file_mode: int = 0o600, file_group: str | None = None,
                 log_max_bytes: int | None = 100 * 1024 * 1024) -> None:
        self.conf_dir = conf_dir.absolute()
        self._accounts = accounts
        self.service_users = tuple(service_users)
        self.options = options or BrokerOptions()
        self._pid = pid
        self._pid_file = pid_file
        self._reload_command = tuple(reload_command) if reload_command else None
        self.binary = binary
        self.data_dir = (data_dir or self.conf_dir / DATA_DIR).absolute()
        self.log_file = (log_file or self.conf_dir / LOG_FILE).absolute()
        self._file_mode = file_mode
        self._file_group = file_group
        self.log_max_bytes = log_max_bytes
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._starting = False
        self._reload_pending = False
        self.reloads = 0  # SIGHUPs sent (or reload commands run)
        acl_file([], self.service_users)  # a bad service user fails here, at wiring, not on every sync
        password_file([], self.service_users)

    @classmethod
    def for_registry(cls, repo: RegistryRepository, conf_dir: Path, **kwargs: Any) -> MosquittoManager:
        """A manager whose accounts are every device in ``repo``; ``kwargs`` as for the constructor."""
        return cls(conf_dir, lambda: accounts_from_registry(repo), **kwargs)

    # -- files -------------------------------------------------------------------------------------
    @property
    def conf_file(self) -> Path:
        return self.conf_dir / CONF_FILE

    @property
    def password_file(self) -> Path:
        return self.conf_dir / PASSWORD_FILE

    @property
    def acl_file(self) -> Path:
        return self.conf_dir / ACL_FILE

    @property
    def own_pid_file(self) -> Path:
        """Where a Mosquitto run with the generated config writes its pid."""
        return self.conf_dir / PID_FILE

    def config_text(self, options: BrokerOptions | None = None) -> str:
        return mosquitto_conf(options or self.options, password_path=self.password_file, acl_path=self.acl_file,
                              data_dir=self.data_dir, log_path=self.log_file, pid_path=self.own_pid_file)

    def write_config(self, options: BrokerOptions | None = None) -> bool:
        """Write ``mosquitto.conf`` (for ``start()``, or for an existing Mosquitto to include)."""
        self._prepare_dirs()
        return self._write_if_changed(self.conf_file, self.config_text(options))

    def render(self) -> tuple[str, str]:
        """The password file and ACL file texts for the registry as it is now."""
        accounts = usable_accounts(self._accounts(), reserved=[u.username for u in self.service_users])
        return password_file(accounts, self.service_users), acl_file(accounts, self.service_users)

    def sync(self) -> bool:
        """Write the files if the registry changed them, then reload the broker. True if anything changed.

        Idempotent: with nothing changed, nothing is written and no signal is sent.
        """
        with self._lock:
            passwd, acl = self.render()
            self._prepare_dirs()
            changed = self._write_if_changed(self.acl_file, acl)
            changed = self._write_if_changed(self.password_file, passwd) or changed
            if changed:
                self._reload_pending = True
            if self._reload_pending and not self._starting:
                self.reload()
            return changed

    # -- reload ------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The broker process to signal, if one is known and alive."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        if self._pid is not None:
            return self._pid
        for path in (self._pid_file, self.own_pid_file):
            if path is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                return int(path.read_text().strip())
        return None

    def reload(self) -> bool:
        """Make the broker read its files again (SIGHUP). False if there is no broker to tell."""
        with self._lock:
            if self._reload_command is not None:
                result = subprocess.run(self._reload_command, capture_output=True, timeout=30, check=False)  # noqa: S603
                if result.returncode != 0:
                    _log.error("Mosquitto reload command %s failed (%d): %s", self._reload_command,
                               result.returncode, result.stderr.decode(errors="replace")[-500:])
                    return False
                return self._reloaded()
            pid = self.pid
            if pid is None or not _is_mosquitto(pid):
                _log.warning("Mosquitto files changed but no running broker is known (pid %s); it reads them "
                             "when it starts or gets SIGHUP", pid)
                return False
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                _log.warning("Mosquitto (pid %d) is gone; its files are written for the next start", pid)
                return False
            return self._reloaded()

    def _reloaded(self) -> bool:
        self._reload_pending = False
        self.reloads += 1
        _log.info("Mosquitto reloaded its password and ACL files")
        return True

    async def watch(self, repo: Versioned, every_s: float = 1.0, *, resync_every_s: float = 60.0) -> None:
        """Sync whenever ``repo.version()`` changes (and every ``resync_every_s`` anyway), until cancelled.

        Each turn also rotates the broker's log once it is past ``log_max_bytes``.
        """
        last: int | None = None
        last_sync = time.monotonic()
        child_dead_logged = False
        while True:
            try:
                version = repo.version()
                if version != last or self._reload_pending or time.monotonic() - last_sync >= resync_every_s:
                    self.sync()
                    last, last_sync = version, time.monotonic()
            except Exception:
                _log.exception("could not bring Mosquitto's files up to date; trying again")
            try:
                self.rotate_log()
            except OSError as exc:
                _log.warning("could not rotate the Mosquitto log %s: %s", self.log_file, exc)
            if self._proc is not None and self._proc.poll() is not None and not child_dead_logged:
                child_dead_logged = True
                _log.error("Mosquitto (pid %d) exited with %s; see %s", self._proc.pid, self._proc.returncode,
                           self.log_file)
            await asyncio.sleep(every_s)

    def rotate_log(self, max_bytes: int | None = None) -> bool:
        """Rename a log past ``max_bytes`` (default ``log_max_bytes``) to ``<log>.1`` and SIGHUP the broker.

        Mosquitto reopens its log on SIGHUP; a ``LogWatch`` reads the renamed file to its end first.
        Done only when the broker can be signalled (else it would go on writing to the renamed file).
        """
        limit = self.log_max_bytes if max_bytes is None else max_bytes
        if limit is None or self._reload_command is not None:
            return False
        with self._lock:
            try:
                if self.log_file.stat().st_size <= limit:
                    return False
            except FileNotFoundError:
                return False
            pid = self.pid
            if pid is None or self._starting or not _is_mosquitto(pid):
                return False
            os.replace(self.log_file, self.log_file.with_name(self.log_file.name + ".1"))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)
            _log.info("rotated the Mosquitto log to %s.1", self.log_file.name)
            return True

    def log_watch(self, *, from_start: bool = False) -> LogWatch:
        """A ``LogWatch`` on this broker's log, to count logins and publishes it refused."""
        return LogWatch(self.log_file, from_start=from_start)

    # -- child process -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> int:
        """Write every file and run Mosquitto as a child process; return once it accepts connections."""
        with self._lock:
            if self.running:
                raise MosquittoError("Mosquitto is already running")
            if shutil.which(self.binary) is None:
                raise MosquittoError(f"the Mosquitto executable {self.binary!r} was not found; install mosquitto "
                                     "(e.g. 'apt install mosquitto') or set mosquitto_binary")
            self._starting = True
        try:
            self._stop_orphan()
            # Run as ourselves, so Mosquitto does not switch to its own user and can read our 0600 files.
            options = self.options
            if options.run_as_user is None:
                options = replace(options, run_as_user=pwd.getpwuid(os.geteuid()).pw_name)
            self.write_config(options)
            self.sync()
            with self._lock:
                self._reload_pending = False  # the broker reads the files as it starts
            stderr_path = self.conf_dir / STDERR_FILE
            with open(stderr_path, "wb") as stderr:
                proc = subprocess.Popen(  # noqa: S603
                    [self.binary, "-c", str(self.conf_file)], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
            self._proc = proc
            self._wait_listening(proc, stderr_path, timeout_s)
        except BaseException:
            with self._lock:
                self._starting = False
            if self._proc is not None:
                self.stop()
            raise
        with self._lock:
            self._starting = False
            if self._reload_pending:  # the registry changed while the broker was starting
                self.reload()
        _log.info("Mosquitto (pid %d) listening on port %d", proc.pid, self.options.port)
        return proc.pid

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop the child (SIGTERM: Mosquitto saves its persistence file; SIGKILL after the timeout)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _log.warning("Mosquitto (pid %d) did not stop within %.0f s; killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait(timeout_s)
        return proc.returncode

    def _wait_listening(self, proc: subprocess.Popen[bytes], stderr_path: Path, timeout_s: float) -> None:
        host = self.options.host or "127.0.0.1"
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise MosquittoError(f"Mosquitto exited at start ({proc.returncode}): {self._why(stderr_path)}")
            with contextlib.suppress(OSError), socket.create_connection((host, self.options.port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise MosquittoError(f"Mosquitto did not listen on {host}:{self.options.port} within "
                                     f"{timeout_s:.0f} s: {self._why(stderr_path)}")
            time.sleep(0.05)

    def _why(self, stderr_path: Path) -> str:
        tail = []
        for path in (stderr_path, self.log_file):
            with contextlib.suppress(OSError):
                tail += path.read_text(errors="replace").splitlines()[-5:]
        return " | ".join(line for line in tail if line.strip()) or "no output"

    def _stop_orphan(self, timeout_s: float = 10.0) -> None:
        """A Mosquitto left running on our config by a process that died: stop it (it holds the port)."""
        try:
            pid = int(self.own_pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if not self._runs_our_config(pid):
            return
        _log.warning("stopping a Mosquitto (pid %d) left running on %s", pid, self.conf_file)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self._runs_our_config(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)

    def _runs_our_config(self, pid: int) -> bool:
        """True while ``pid`` is a live ``mosquitto -c <our conf>`` (an exited one has no command line)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.conf_file).encode() in cmdline

    # -- helpers -----------------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _write_if_changed(self, path: Path, text: str) -> bool:
        data = text.encode()
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return False
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), self._file_mode)
                if self._file_group is not None:
                    shutil.chown(tmp, group=self._file_group)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True


def _is_mosquitto(pid: int) -> bool:
    """Guard against a stale pid file: on Linux, only signal a process that is a mosquitto."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc here (macOS): trust the pid; else it is gone
    except OSError:
        return True
    if "mosquitto" not in comm:
        _log.error("pid %d is %r, not mosquitto; not signalling it", pid, comm)
        return False
    return True
