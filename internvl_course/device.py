"""Pick where tensors go, d2l's ``try_gpu`` style: a CUDA GPU when there is one, else the CPU."""

from __future__ import annotations

import torch


def pick_device(preference: str = "auto") -> torch.device:
    """``"auto"`` (GPU if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; says why it chose."""
    if preference == "auto":
        if torch.cuda.is_available():
            print(f"Using cuda:0 ({torch.cuda.get_device_name(0)}).")
            return torch.device("cuda:0")
        print("No CUDA GPU found: using the CPU.")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={preference!r} was asked for, but torch sees no CUDA GPU here. "
                         "Use device='auto' or 'cpu'.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={preference!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} GPU(s), numbered from 0.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={preference!r} is not supported: use 'auto', 'cpu' or 'cuda[:N]'.")
    return device
