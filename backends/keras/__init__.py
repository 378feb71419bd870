"""The Keras backend: lower Keras models into the IR, build Keras models back from it."""

from .build import build, copy_weights
from .emit import to_config
from .load import load_model, lower, read_file_config

__all__ = ["build", "copy_weights", "to_config", "load_model", "lower", "read_file_config"]
