"""Triton python-backend entry point of ``ensemble_postprocess``: the code is ``loadtests/ensemble/backend.py``."""

from loadtests.ensemble.backend import PostprocessModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
