"""Where abc_gym runs: one rule for the ``device`` argument of every entry point.

``"auto"`` means CUDA when this process can use it, else CPU. Every abc_gym entry
point that takes ``device`` (the three env front ends, :class:`~abc_gym.core.TokenEpisodes`,
:class:`~abc_gym.reward_model.RewardModel` and the demo) resolves it here.
"""

from __future__ import annotations

import torch

from abc_gym.compat.torch import in_bad_cuda_fork

Device = str | torch.device

_FIX = 'use device="cpu", or device="auto" (CUDA when available, else CPU)'


def resolve_device(device: Device = "auto") -> torch.device:
    """The ``torch.device`` for an abc_gym ``device`` argument.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: an unknown device string, or CUDA asked for where this process cannot
            use it (no CUDA, no such GPU, or a worker forked after its parent used CUDA);
            the message names ``device="cpu"`` / ``device="auto"``.
    """
    if isinstance(device, str) and device == "auto":
        usable = torch.cuda.is_available() and not in_bad_cuda_fork()
        return torch.device("cuda" if usable else "cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    else:
        raise TypeError(f"device must be a string or torch.device, got {device!r} ({type(device).__name__}): {_FIX}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} but CUDA is not available on this machine: {_FIX}")
        if in_bad_cuda_fork():
            raise ValueError(
                f"device={str(device)!r} in a process forked after its parent used CUDA, where CUDA cannot work: "
                "pass vector_kwargs={'context': 'spawn'} to gym.make_vec, use the default vectorization mode "
                f"(one batched env), or {_FIX}"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r} but this machine has {torch.cuda.device_count()} GPU(s): {_FIX}")
    return dev
