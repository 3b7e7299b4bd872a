"""Where tensors and kernels live: ``cpu`` or ``cuda[:N]``, checked against what this machine has.

>>> parse_device("cpu")
'cpu'
>>> parse_device("tpu")
Traceback (most recent call last):
lowbit.errors.LowbitError: --device: unknown device 'tpu'; expected cpu or cuda[:N]
hint: e.g. --device cuda
"""
from __future__ import annotations

from lowbit.errors import LowbitError

__all__ = ["parse_device"]


def parse_device(text: str, flag: str = "--device") -> str:
    """``cpu`` or ``cuda`` (``cuda:N`` picks a GPU), lower-cased; a :class:`lowbit.LowbitError` naming ``flag``
    when this machine has no such device."""
    name = str(text).strip().lower()
    if name != "cpu" and name != "cuda" and not name.startswith("cuda:"):
        raise LowbitError(f"{flag}: unknown device {text!r}; expected cpu or cuda[:N]", hint="e.g. --device cuda")
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise LowbitError(f"{flag} {name}: this machine has no CUDA device torch can use",
                              hint=f"torch {torch.__version__}; run on a GPU machine with a CUDA build of torch, "
                                   "or drop --device")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise LowbitError(f"{flag} {name}: no such GPU (this machine has {torch.cuda.device_count()})")
    return name
