"""Unit tests of the load-test harness (pure parts, no sockets)."""
