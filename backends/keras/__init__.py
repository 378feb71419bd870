"""The Keras backend: lower Keras models into the IR, build Keras models back from it."""

from .build import build, build_partitions, copy_weights
from .load import load_model, lower, read_file_config

__all__ = ["build", "build_partitions", "copy_weights", "load_model", "lower", "read_file_config"]
