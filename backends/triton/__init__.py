"""Triton Inference Server model repositories: :func:`export_triton` (``kgraft.export_triton``).

Needs ``tritonclient`` (``pip install 'kgraft[serve]'``) for Triton's ``ModelConfig`` protobuf.
"""

from .repository import PLATFORM, config_proto, export_triton, read_config

__all__ = ["export_triton", "config_proto", "read_config", "PLATFORM"]
