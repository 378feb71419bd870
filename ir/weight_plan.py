"""Weight transforms as data: what a backend does to a source layer's variables when it copies them.

Surgery passes change layers whose trained weights must follow (channels deleted, BatchNorm folded
into a kernel). The IR holds no weights and imports no TensorFlow, so a pass records the transform
on ``Layer.weight_plan`` as a tuple of these steps, applied in order to the source variables by
name; the Keras backend (:mod:`kgraft.backends.keras.weight_plan`) runs them when it copies weights.

    take kernel[axis 3: keep 0..2,5]     # delete output channels 3 and 4 of a Conv2D
    fold bn1 (out axes 1)                # kernel * gamma/sqrt(var+eps), bias shifted
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .graph import Layer

__all__ = ["Take", "FoldBatchNorm", "format_indices", "describe"]


@dataclass(frozen=True)
class Take:
    """Keep only the indices ``keep`` along ``axis`` of the variable named ``weight``."""

    weight: str
    axis: int
    keep: tuple[int, ...]

    def __str__(self) -> str:
        return f"take {self.weight}[axis {self.axis}: keep {format_indices(self.keep)}]"


@dataclass(frozen=True)
class FoldBatchNorm:
    """Fold the inference-mode BatchNormalization ``bn`` (an IR layer: its handle holds the
    statistics, its own plan may slice them) into ``kernel`` and ``bias``. The output channel of
    the kernel is its last ``out_axes`` axes flattened (2 for a DepthwiseConv2D: in x multiplier);
    a missing bias starts at zero."""

    bn: "Layer"
    out_axes: int = 1

    def __str__(self) -> str:
        return f"fold {self.bn.qualified_name} (out axes {self.out_axes})"


def format_indices(indices) -> str:
    """``0..2,5`` for ``(0, 1, 2, 5)``: runs of consecutive indices as ranges."""
    parts, run = [], []
    for i in indices:
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        parts.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts) or "none"


def describe(plan: tuple) -> str:
    return "; ".join(str(step) for step in plan)
