"""shopfloor: an open industrial-Internet platform."""

__version__ = "0.1.0"
