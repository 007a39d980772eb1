"""Triton python-backend entry point of ``ensemble_preprocess``: the code is ``loadtests/ensemble/backend.py``."""

from loadtests.ensemble.backend import PreprocessModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
