"""Interfaces (typing.Protocol) between services and adapters."""
