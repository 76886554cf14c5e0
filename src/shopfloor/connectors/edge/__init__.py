"""The edge agent (``shopfloor edge --config edge.yaml``): field-bus sources to the platform's MQTT.

- ``config``: edge.yaml; ``agent``: the agent (sources, commands, stats);
- ``buffer``: the disk store-and-forward buffer (SQLite, WAL); ``forwarder``: in-order publishing,
  deletion on PUBACK; ``link``: the paho-mqtt connection; ``messages``: readings as telemetry JSON.

The composition (which connectors feed it) is ``shopfloor.edgeboot``.
"""
