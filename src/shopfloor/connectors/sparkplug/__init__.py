"""Sparkplug B 3.0: shopfloor as a Sparkplug host application.

- ``sparkplug_b.proto`` and the generated ``sparkplug_b_pb2`` (regenerate with ``scripts/gen_sparkplug.sh``);
- ``codec``: payload bytes to typed values (``model``) and back, arrays in ``arrays``;
- ``topics``: the ``spBv1.0`` topic namespace, the host's STATE message and the rebirth command;
- ``host_state``: the per-edge-node state machine (bdSeq, sequence numbers, aliases, births and deaths),
  pure, turning each message into actions for the MQTT side to carry out;
- ``host``: ``SparkplugHost``, the ``MessageSink`` that carries those actions out (samples, status
  events, stale marks, rebirth requests) through the ``SparkplugDirectory`` and ``BatchSink`` ports,
  and ``SparkplugRouter`` for the embedded broker;
- ``commands``: NCMD/DCMD metric writes; ``publisher``: an MQTT connection that only publishes;
- ``worker``: server-mode workers, each owning a slice of the group ids.

See docs/sparkplug.md.
"""
