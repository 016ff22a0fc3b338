"""PyTorch modules built from descriptions."""

from .mlp import MLPNet, NTKLinear, build_mlp

__all__ = ["MLPNet", "NTKLinear", "build_mlp"]
