"""Live audio benchmark (issue 11): real-time speech-detection streams through the mesh vs the model in one process.

Run from the repository root: ``python -m loadtests.audio --help``.
"""
