"""kgraft's graph IR: call sites of Keras layers on networkx. Imports no TensorFlow."""

from .errors import *  # noqa: F401,F403
from .graph import (INPUT_CLASS, RECORDED_TRAINING_WINS, Graph, Layer, Node, ValueRef, partitions_of,
                    recorded_training_wins)
from .parser import parse
from .printer import print_graph
from .types import TensorType
from .verifier import verify

__all__ = ["Graph", "Layer", "Node", "ValueRef", "TensorType", "INPUT_CLASS",
           "parse", "print_graph", "verify", "partitions_of", "RECORDED_TRAINING_WINS",
           "recorded_training_wins"]
