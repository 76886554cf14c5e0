"""Alarms with an ISA-18.2 lifecycle, and the rules that raise them (pure logic, no I/O)."""
