"""sphericalcow: first-principles theory of neural networks next to PyTorch measurements."""

__version__ = "0.1.0"
