"""Connectors: one subpackage per protocol, each a thin adapter that hands what arrives to a port.

A connector acknowledges to its transport (PUBACK, JetStream ack) only after the sink it feeds has
committed, so nothing it accepts is lost. Connectors import ports and domain, never services,
storage or each other.
"""
