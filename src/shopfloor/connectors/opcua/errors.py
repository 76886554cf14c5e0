"""Errors of the OPC UA connector, translated from asyncua's at this boundary."""

from __future__ import annotations

from shopfloor.domain.errors import Forbidden, InvalidInput, ShopfloorError


class OpcUaError(ShopfloorError):
    """Root of the connector's errors."""

    status = 502
    title = "OPC UA error"


class OpcUaUnreachable(OpcUaError):
    """The server cannot be reached, or the connection was lost."""

    status = 503
    title = "OPC UA server unreachable"


class OpcUaAuthError(OpcUaError, Forbidden):
    """The server refused the user (wrong user name or password) or the client's certificate."""

    status = 403
    title = "OPC UA server refused the client"


class OpcUaSecurityError(OpcUaError):
    """The security policy or mode is not offered, or a certificate does not check out."""

    status = 502
    title = "OPC UA security failed"


class OpcUaWriteError(OpcUaError, InvalidInput):
    """A write was refused: the node is not mapped, not writable, or the server said no."""

    status = 422
    title = "OPC UA write refused"
