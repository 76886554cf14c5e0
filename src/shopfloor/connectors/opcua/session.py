"""An asyncua client built from a device's ``opcua`` section, with errors made readable."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509

from shopfloor.connectors.opcua.errors import OpcUaAuthError, OpcUaError, OpcUaSecurityError, OpcUaUnreachable
from shopfloor.domain.opcua_map import OpcUaSpec, SecurityMode, SecurityPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

_AUTH = ("BadUserAccessDenied", "BadIdentityTokenRejected", "BadIdentityTokenInvalid", "BadUserSignatureInvalid")
_SECURITY = ("BadSecurityPolicyRejected", "BadSecurityModeRejected", "BadCertificate", "BadSecurityChecksFailed",
             "BadNoValidCertificates", "BadApplicationSignatureInvalid")
_MODES = {SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
          SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt}


async def make_client(spec: OpcUaSpec, *, timeout_s: float = 4.0, watchdog_s: float = 1.0,
                      password: str | None = None) -> Client:
    """A configured, not yet connected client (security and user set)."""
    client = Client(spec.endpoint, timeout=timeout_s, watchdog_intervall=watchdog_s)
    client.application_uri = "urn:shopfloor:opcua-client"
    client.name = "shopfloor"
    client.description = "shopfloor OPC UA connector"
    if spec.username:
        client.set_user(spec.username)
        secret = password if password is not None else spec.resolve_password()
        if secret is not None:
            client.set_password(secret)
    sec = spec.security
    if sec.policy is SecurityPolicy.BASIC256SHA256:
        assert sec.certificate is not None and sec.private_key is not None  # check_opcua made sure
        uri = _application_uri(sec.certificate)
        if uri is not None:  # servers check that the certificate names the client's application URI
            client.application_uri = uri
        await guarded(spec.endpoint, client.set_security(
            SecurityPolicyBasic256Sha256, sec.certificate, sec.private_key,
            server_certificate=sec.server_certificate, mode=_MODES[sec.mode]))
    return client


def _application_uri(cert_path: str) -> str | None:
    """The URI in the client certificate's subjectAltName (PEM or DER), if any."""
    try:
        data = Path(cert_path).read_bytes()
    except OSError as exc:
        raise OpcUaSecurityError(f"client certificate {cert_path}: {exc.strerror}") from None
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise OpcUaSecurityError(f"client certificate {cert_path} is not a certificate: {exc}") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


async def connect(spec: OpcUaSpec, *, timeout_s: float = 4.0, watchdog_s: float = 1.0) -> Client:
    """A connected client, or a clear ``OpcUaError``."""
    client = await make_client(spec, timeout_s=timeout_s, watchdog_s=watchdog_s)
    await guarded(spec.endpoint, client.connect())
    return client


async def guarded(endpoint: str, call: Awaitable[T]) -> T:
    """Await ``call``, translating asyncua's and the socket's errors into ours."""
    try:
        return await call
    except OpcUaError:
        raise
    except ua.UaStatusCodeError as exc:
        raise translate(endpoint, exc) from None
    except FileNotFoundError as exc:
        raise OpcUaSecurityError(f"OPC UA {endpoint}: {exc.strerror}: {exc.filename}") from None
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise OpcUaUnreachable(f"OPC UA server {endpoint} unreachable: {exc or type(exc).__name__}") from None
    except ua.UaError as exc:
        if "No matching endpoints" in str(exc):
            raise OpcUaSecurityError(f"OPC UA server {endpoint} offers no endpoint with this security policy and "
                                     f"mode ({exc}): see its endpoints with 'shopfloor opcua browse'") from None
        raise OpcUaError(f"OPC UA server {endpoint}: {exc}") from None


def translate(endpoint: str, exc: ua.UaStatusCodeError) -> OpcUaError:
    name = type(exc).__name__
    if name in _AUTH:
        return OpcUaAuthError(f"OPC UA server {endpoint} refused the user ({name}): check the user name and "
                              "password (username / password_env)")
    if name.startswith(_SECURITY):
        return OpcUaSecurityError(f"OPC UA server {endpoint} refused the secure channel ({name}): check the "
                                  "security policy and mode, and that each side trusts the other's certificate")
    return OpcUaError(f"OPC UA server {endpoint}: {name}: {exc}")


async def close(client: Client) -> None:
    """Disconnect, ignoring a connection that is already gone."""
    try:
        await asyncio.wait_for(client.disconnect(), 2.0)
    except Exception as exc:  # a dead link cannot be closed politely; the socket goes anyway
        log.debug("OPC UA disconnect: %s", exc)
        try:
            client.disconnect_socket()
        except Exception as exc2:
            log.debug("OPC UA socket close: %s", exc2)

