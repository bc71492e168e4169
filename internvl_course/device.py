"""Pick where tensors go, d2l's ``try_gpu`` style: a CUDA GPU when there is one, else the CPU."""

from __future__ import annotations

import torch

# NVLink multicast (NVLS) is off in every launch: NCCL's NVLS all-reduce and torch's symmetric
# memory need a fabric manager setup that shared GPU nodes often lack, and hang instead of failing
# there. Plain NVLink/PCIe all-reduce is what ZeRO-2 and tensor parallelism need anyway.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def multicast_off(env: dict[str, str]) -> dict[str, str]:
    """A copy of ``env`` with multicast switched off, for a child process to start with."""
    return {**env, **MULTICAST_OFF}


def check_gpu_count(wanted: int, what: str) -> None:
    """Refuse to start ``wanted`` GPU processes on a machine with fewer GPUs, saying how many it has."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted > have:
        fix = f"use {what}={have} or less" if have else "this machine has no CUDA GPU: leave it unset to use the CPU"
        raise ValueError(f"{what}={wanted} asks for {wanted} GPUs, but torch sees {have} here; {fix}, "
                         "or run on a machine with more GPUs.")


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
