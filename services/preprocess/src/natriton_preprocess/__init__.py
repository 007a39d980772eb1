"""Natriton preprocess service."""

VERSION = "0.1.0"
