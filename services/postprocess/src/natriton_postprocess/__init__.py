"""Natriton postprocess service."""

VERSION = "0.1.0"
