"""Natriton ingest service."""

VERSION = "0.1.0"
