"""Tensor types of IR values: a shape (``None`` for an unknown dimension) and a dtype.

Printed MLIR-style as ``f32[?,32,32,3]``; an unknown rank prints as ``f32[*]`` and an
unknown dtype as ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TensorType", "UNKNOWN", "compute_dtype", "human_bytes"]

_SHORT = {
    "float16": "f16", "float32": "f32", "float64": "f64", "bfloat16": "bf16",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
    "bool": "i1", "string": "str", "complex64": "c64", "complex128": "c128",
}
_LONG = {v: k for k, v in _SHORT.items()}
_BYTES = {"float16": 2, "float32": 4, "float64": 8, "bfloat16": 2, "int8": 1, "int16": 2, "int32": 4,
          "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1, "complex64": 8,
          "complex128": 16}


@dataclass(frozen=True, slots=True)
class TensorType:
    """Shape and dtype of one tensor; either may be unknown (``None``)."""

    shape: tuple[int | None, ...] | None = None
    dtype: str | None = None

    def __str__(self) -> str:
        dtype = "?" if self.dtype is None else _SHORT.get(self.dtype, self.dtype)
        if self.shape is None:
            return f"{dtype}[*]"
        return f"{dtype}[{','.join('?' if d is None else str(d) for d in self.shape)}]"

    @staticmethod
    def parse(text: str) -> "TensorType":
        """Inverse of ``str``: ``f32[?,4]`` -> ``TensorType((None, 4), "float32")``."""
        dtype, _, rest = text.partition("[")
        if not rest.endswith("]"):
            raise ValueError(f"not a tensor type: {text!r} (expected e.g. f32[?,4])")
        dims = rest[:-1]
        dtype_name = None if dtype == "?" else _LONG.get(dtype, dtype)
        if dims == "*":
            return TensorType(None, dtype_name)
        shape = tuple(None if d == "?" else int(d) for d in dims.split(",")) if dims else ()
        return TensorType(shape, dtype_name)

    @property
    def known(self) -> bool:
        return self.shape is not None and self.dtype is not None

    @property
    def bytes_per_sample(self) -> int | None:
        """Size of one sample (all dimensions but the batch); ``None`` when not fully known."""
        if self.shape is None or self.dtype not in _BYTES or any(d is None for d in self.shape[1:]):
            return None
        size = _BYTES[self.dtype]
        for d in self.shape[1:]:
            size *= d
        return size

    def compatible(self, other: "TensorType") -> bool:
        """False only when both types are known and clash (rank, a fixed dim, or dtype)."""
        if self.dtype and other.dtype and self.dtype != other.dtype:
            return False
        if self.shape is None or other.shape is None:
            return True
        if len(self.shape) != len(other.shape):
            return False
        return all(a is None or b is None or a == b for a, b in zip(self.shape, other.shape))


UNKNOWN = TensorType()


def compute_dtype(spec: dict) -> str | None:
    """The dtype a layer computes in, from its dtype policy (``mixed_float16`` -> ``float16``)."""
    dtype = spec.get("config", {}).get("dtype")
    if isinstance(dtype, dict):
        policy = dtype.get("config")
        dtype = policy.get("name") if isinstance(policy, dict) else None
    if isinstance(dtype, str) and dtype.startswith("mixed_"):
        return dtype[len("mixed_"):]
    return dtype if isinstance(dtype, str) else None


def human_bytes(n: int | None) -> str:
    """``802816`` -> ``784.0 KiB``; None (a size not fully known) -> ``?``."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
