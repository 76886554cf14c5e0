"""OPC UA connector: shopfloor as the client of a PLC's OPC UA server (asyncua lives only here).

* ``OpcUaSource``: subscriptions (or polling) into a ``ReadingSink``, reconnect, back-fill, writes.
* ``handle_command``: the edge agent's handler of an ``opcua_write`` command from the platform.
* ``browse``: the address space as a tree (``shopfloor opcua browse``).
"""

from shopfloor.connectors.opcua.commands import WRITE_COMMAND, handle_command
from shopfloor.connectors.opcua.errors import (
    OpcUaAuthError,
    OpcUaError,
    OpcUaSecurityError,
    OpcUaUnreachable,
    OpcUaWriteError,
)
from shopfloor.connectors.opcua.source import OpcUaSource

__all__ = ["WRITE_COMMAND", "OpcUaAuthError", "OpcUaError", "OpcUaSecurityError", "OpcUaSource",
           "OpcUaUnreachable", "OpcUaWriteError", "handle_command"]
