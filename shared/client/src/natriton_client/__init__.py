"""Natriton's client: the public wire contract (:mod:`natriton_client.protocol`) and clients for producers."""

__version__ = "0.1.0"
