"""One thread count for everything a benchmark times: torch's intra-op pool and lowbit's CPU kernels.

:func:`use_threads` sets ``torch.set_num_threads``, ``LOWBIT_NUM_THREADS`` (lowbit's kernels size their
parallel work by it) and TVM's pool (``TVM_NUM_THREADS`` before TVM starts, ``runtime.config_threadpool``
once it runs), and restores them on exit.

>>> import torch
>>> with use_threads(1):
...     torch.get_num_threads()
1
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from lowbit.errors import LowbitError

__all__ = ["use_threads"]

_ENV = ("LOWBIT_NUM_THREADS", "TVM_NUM_THREADS")


@contextlib.contextmanager
def use_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` threads for torch, lowbit and TVM (see the module docstring)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise LowbitError(f"threads must be an integer >= 1; got {threads!r}")
    import torch

    saved_env = {name: os.environ.get(name) for name in _ENV}
    saved_torch = torch.get_num_threads()
    os.environ["LOWBIT_NUM_THREADS"] = str(threads)
    if "tvm" not in sys.modules:
        os.environ["TVM_NUM_THREADS"] = str(threads)
    else:  # TVM's pool exists already: resize it for this thread (it cannot grow past its start-up size)
        from lowbit.lowering.tvm.target import set_num_threads

        set_num_threads(threads)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved_torch)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
