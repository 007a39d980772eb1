"""Streaming video (decision 0005): sources, sampling, per-camera tracking, change gate, events, resequencing.

Import the modules themselves (``natriton.video.source``, …); this package re-exports nothing.
"""
