"""Every error kgraft raises, in one place.

All derive from :class:`KgraftError` (a ``ValueError``) so a caller can catch one type.
A message says what was asked, what was found, and what to do.
"""

from __future__ import annotations

__all__ = [
    "KgraftError",
    "RefError",
    "CutError",
    "UnsupportedModelError",
    "UnknownLayerError",
    "VerificationError",
    "IRParseError",
    "PipelineError",
    "PassError",
    "EquivalenceError",
    "ShapeError",
]


class KgraftError(ValueError):
    """Base class of every error kgraft raises on purpose."""


class RefError(KgraftError):
    """A tensor reference (``name``, ``outer/inner``, ``name:i``, ``name@k``) names nothing."""


class CutError(KgraftError):
    """A cut does not separate the model's inputs from its outputs, or inputs do not suffice."""


class UnsupportedModelError(KgraftError):
    """The model has no functional graph (subclassed models) or uses ops without a config."""


class UnknownLayerError(KgraftError):
    """Layer classes or Python functions that neither ``custom_objects`` nor Keras's registry provide."""

    def __init__(self, missing: list[str], where: str = "the model", functions: list[str] = ()):
        self.missing = sorted(set(missing))
        self.functions = sorted(set(functions))
        found = []
        if self.missing:
            names = ", ".join(repr(n) for n in self.missing)
            found.append(f"unknown layer class{'es' if len(self.missing) > 1 else ''} {names}")
        if self.functions:
            names = ", ".join(repr(n) for n in self.functions)
            found.append(f"unknown function{'s' if len(self.functions) > 1 else ''} {names} (named by a "
                         "layer's config, e.g. a Lambda's function or a TextVectorization standardize)")
        every = self.missing + self.functions
        example = ", ".join(f"{n!r}: {n.split('>')[-1]}" for n in every)
        super().__init__(
            f"{' and '.join(found)} in {where}: Keras has no object registered under "
            f"{'these names' if len(every) > 1 else 'this name'}. "
            f"Pass them explicitly, e.g. custom_objects={{{example}}} (CLI: --custom-objects FILE.py), "
            "or decorate them with @keras.saving.register_keras_serializable()."
        )


class VerificationError(KgraftError):
    """The IR broke an invariant (cycle, undefined operand, duplicate name, shape clash)."""


class IRParseError(KgraftError):
    """Textual IR that does not parse; the message points at the line and column."""


class PipelineError(KgraftError):
    """A pass pipeline string that does not parse, or names an unknown pass or option."""


class PassError(KgraftError):
    """An unexpected failure inside a pass (a bug); says which passes had already run."""


class EquivalenceError(KgraftError):
    """A result that does not compute what the source computes; names the first differing tensor."""


class ShapeError(KgraftError):
    """A structural change after which a layer's weights no longer fit its new input type."""
