"""Shared test settings: deterministic, single-threaded-friendly torch on CPU."""

import torch

torch.set_num_threads(min(2, torch.get_num_threads()))
