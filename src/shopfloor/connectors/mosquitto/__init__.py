"""Mosquitto as the server-mode broker, kept in step with the registry.

``config`` builds Mosquitto's password file, ACL file and ``mosquitto.conf`` (pure functions);
``manager.MosquittoManager`` writes them atomically, reloads the broker with SIGHUP when they change
(Mosquitto then cuts devices that were disabled or rotated), and can run Mosquitto as a child
process; ``logwatch`` counts the logins and publishes the broker refused, from its log.
"""

from .config import BrokerConfigError, BrokerOptions, DeviceAccount, ServiceUser
from .logwatch import BrokerRejects, LogWatch, RejectCounter, count_rejects
from .manager import MosquittoError, MosquittoManager, accounts_from_registry

__all__ = [
    "BrokerConfigError",
    "BrokerOptions",
    "BrokerRejects",
    "DeviceAccount",
    "LogWatch",
    "MosquittoError",
    "MosquittoManager",
    "RejectCounter",
    "ServiceUser",
    "accounts_from_registry",
    "count_rejects",
]
