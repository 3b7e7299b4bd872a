"""Format ids: names + versions of packed weight layouts.

Every packed weight array carries the id of the layout it was written in, so weights packed for one kernel
layout are never silently read by another: consumers check the id (and version) and fail with
:class:`lowbit.FormatError` on a mismatch.

>>> DENSE_ROWMAJOR
FormatId(name='dense-rowmajor', version=1)
>>> str(DENSE_ROWMAJOR)
'dense-rowmajor/v1'
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import FormatError

__all__ = ["FormatId", "DENSE_ROWMAJOR"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")


@dataclass(frozen=True)
class FormatId:
    """The name and version of a packed layout. Bump the version whenever the byte order changes."""

    name: str
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise FormatError(f"a format name must be a non-empty word of letters, digits and '-_.:'; "
                              f"got {self.name!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise FormatError(f"a format version must be a positive integer; got {self.version!r}")

    def __str__(self) -> str:
        return f"{self.name}/v{self.version}"


#: The layout :func:`lowbit.quant.quantize` writes: codes of each row (last axis, K) packed into a dense
#: little-endian bitstream (:func:`lowbit.pack`), rows in row-major order.
DENSE_ROWMAJOR = FormatId("dense-rowmajor", 1)
