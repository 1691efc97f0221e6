"""Same inputs, same numbers: seeded random draws and explicit thread counts for every training step."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset


def cuda_devices() -> list[int]:
    """Indices of the visible CUDA devices (empty without CUDA)."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generators (CPU and every CUDA device) seeded with `seed` inside, restored after.

    For draws that only the global generator can make (dropout, default initialisers); the caller's
    random state is left exactly as it was.
    """
    with torch.random.fork_rng(devices=cuda_devices()):
        torch.manual_seed(seed)  # seeds the CPU and all CUDA generators
        yield


@contextlib.contextmanager
def training_threads(threads: int, deterministic: bool = True) -> Iterator[None]:
    """Run a training step with exactly `threads` intra-op threads and deterministic kernels; restores both after."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn)


def in_order(data: Dataset, batch_size: int, **options: Any) -> DataLoader:
    """A DataLoader over `data` in order, with its own generator: a DataLoader without one draws a seed from torch's
    global generator each time it is iterated, which would move the caller's random state."""
    return DataLoader(data, batch_size=batch_size, shuffle=False, generator=torch.Generator(), **options)
