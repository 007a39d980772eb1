"""Natriton router service."""

VERSION = "0.1.0"
