"""Test-session settings: one intra-op thread per worker (pytest -n 2 on 2 cores would otherwise
oversubscribe, and tiny matmuls slow down by orders of magnitude under contention); a headless backend."""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
