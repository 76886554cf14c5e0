"""Fakes and contract suites that every port implementation must pass."""
