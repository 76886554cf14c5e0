"""Errors of the Sparkplug connector, under the platform's one root error."""

from __future__ import annotations

from shopfloor.domain.errors import InvalidInput


class SparkplugError(InvalidInput):
    """Root of the errors the Sparkplug connector raises on purpose."""

    title = "Invalid Sparkplug message"


class SparkplugDecodeError(SparkplugError):
    """Bytes, a topic or a value that cannot be read as Sparkplug B 3.0.

    The decoder raises this and nothing else for malformed input, so a caller can dead-letter the
    message with this text as the reason.
    """


class SparkplugEncodeError(SparkplugError):
    """A value that cannot be written as the Sparkplug data type it was given."""
