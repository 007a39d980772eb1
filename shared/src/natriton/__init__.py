"""Natriton's shared library: the wire contract and the building blocks every service runs on."""

__version__ = "0.1.0"
