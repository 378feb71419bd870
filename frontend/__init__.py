"""Frontends: reading a model description into the graph IR.

:func:`lower_config` lowers a Keras model *config* (``model.get_config()``, a plain dict) and
needs no TensorFlow; :mod:`kgraft.backends.keras` reads live models and files and calls it.
"""

from .lower import MODEL_CLASSES, is_model_spec, lower_config

__all__ = ["lower_config", "is_model_spec", "MODEL_CLASSES"]
