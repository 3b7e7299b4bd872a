"""Group-wise quantization of weights into packed low-bit codes.

>>> import numpy as np
>>> from lowbit.quant import quantize
>>> w = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
>>> qt = quantize(w, "int4", group_size=128)
>>> qt.shape, qt.packed.shape, qt.scales.shape, str(qt.format)
((4, 256), (4, 128), (4, 2), 'dense-rowmajor/v1')
>>> bool(np.all(np.abs(qt.dequantize() - w) <= qt.scales.astype(np.float32).repeat(128, axis=1) / 2))
True

Modules: :mod:`~lowbit.quant.quantizer` (``quantize`` and its scale rules), :mod:`~lowbit.quant.qtensor`
(``QuantizedTensor``), :mod:`~lowbit.quant.formats` (``FormatId``), :mod:`~lowbit.quant.storage`
(scale/zero containers on numpy and torch).
"""
from __future__ import annotations

from .formats import DENSE_ROWMAJOR, FormatId
from .qtensor import QuantizedTensor, stack_rows
from .quantizer import quantize

__all__ = ["quantize", "QuantizedTensor", "FormatId", "DENSE_ROWMAJOR", "stack_rows"]
