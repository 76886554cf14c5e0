"""A real asyncua server for the OPC UA tests: a press with changing variables, on a free port.

Optional: Basic256Sha256 only (with its own certificate), user names with passwords, and history
of every variable in an SQLite file (which survives a restart of the server, like a PLC's).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.history_sql import HistorySQLite
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

NS_URI = "urn:shopfloor:test:plc"
#: browse name -> (initial value, variant type, writable)
VARIABLES: dict[str, tuple[Any, ua.VariantType, bool]] = {
    "Temperature": (20.0, ua.VariantType.Double, False),
    "Pressure": (1.0, ua.VariantType.Double, False),
    "Running": (False, ua.VariantType.Boolean, False),
    "Recipe": ("P1", ua.VariantType.String, False),
    "Setpoint": (50.0, ua.VariantType.Double, True),
    "Counter": (0, ua.VariantType.Int32, True),
}


def node_id(name: str) -> str:
    return f"ns=2;s=Press.{name}"


@dataclass
class CertPair:
    cert: Path
    key: Path


def make_cert(directory: Path, name: str, uri: str) -> CertPair:
    """A self-signed certificate (PEM) with the application URI and host names an OPC UA peer checks."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.DNSName(socket.gethostname()),
                                       x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30)).add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                         data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    pair = CertPair(directory / f"{name}.pem", directory / f"{name}-key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return pair


class _Users:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username in self.users and self.users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


class PlcServer:
    def __init__(self, port: int, *, history_db: Path | None = None, users: dict[str, str] | None = None,
                 cert: CertPair | None = None, extra: int = 0) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/plc"
        self.history_db = history_db
        self.users = users
        self.cert = cert
        self.extra = extra  # that many more Double variables "Tag0000", ...
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}

    async def start(self) -> PlcServer:
        server = Server(user_manager=_Users(self.users) if self.users is not None else None)
        if self.history_db is not None:
            server.iserver.history_manager.set_storage(HistorySQLite(str(self.history_db)))
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("shopfloor test PLC")
        if self.cert is not None:
            await server.load_certificate(str(self.cert.cert))
            await server.load_private_key(str(self.cert.key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                        ua.SecurityPolicyType.Basic256Sha256_Sign])
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        idx = await server.register_namespace(NS_URI)
        assert idx == 2
        press = await server.nodes.objects.add_object(ua.NodeId("Press", idx), ua.QualifiedName("Press", idx))
        names = dict(VARIABLES)
        for i in range(self.extra):
            names[f"Tag{i:05d}"] = (0.0, ua.VariantType.Double, False)
        for name, (value, vtype, writable) in names.items():
            var = await press.add_variable(ua.NodeId(f"Press.{name}", idx), ua.QualifiedName(name, idx),
                                           ua.Variant(value, vtype))
            if writable:
                await var.set_writable()
            self.nodes[name] = var
        await server.start()
        if self.history_db is not None:  # as a PLC does: history, and the access level that says so
            for name in VARIABLES:
                var = self.nodes[name]
                level = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
                if VARIABLES[name][2]:
                    level |= ua.AccessLevel.CurrentWrite.mask
                await var.write_attribute(ua.AttributeIds.AccessLevel, ua.DataValue(ua.Variant(level, ua.VariantType.Byte)))
                await var.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
            await server.historize_node_data_change([self.nodes[n] for n in VARIABLES], period=None, count=0)
        self.server = server
        return self

    async def set(self, name: str, value: Any, ts: dt.datetime | None = None,
                  status: int = ua.StatusCodes.Good) -> dt.datetime:
        """Change a variable as the PLC would: value, status and source timestamp."""
        ts = ts or dt.datetime.now(dt.UTC)
        vtype = VARIABLES[name][1] if name in VARIABLES else ua.VariantType.Double
        dv = ua.DataValue(ua.Variant(value, vtype), ua.StatusCode(status), SourceTimestamp=ts, ServerTimestamp=ts)
        await self.nodes[name].write_value(dv)
        return ts

    async def get(self, name: str) -> Any:
        return await self.nodes[name].read_value()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


class ServerThread:
    """A ``PlcServer`` on its own event loop in a thread, for tests of code that runs its own loop."""

    def __init__(self, server: PlcServer) -> None:
        import asyncio
        import threading

        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PlcServer:
        import asyncio

        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self.server

    def call(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
