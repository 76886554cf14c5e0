"""MQTT: the embedded broker (amqtt, in-process) that feeds the ingest ``MessageSink``.

``embedded_broker.EmbeddedBroker`` authenticates devices through ``DeviceAccess``, keeps each device
under its topic prefixes, and acknowledges a QoS 1/2 PUBLISH only after the sink has committed it.
"""
