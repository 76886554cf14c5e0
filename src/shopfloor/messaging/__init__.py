"""Buses between ingest and its consumers: in-process now, NATS JetStream in cluster mode."""
