"""Compatibility shim: the naming helpers and the typed :class:`Emitter` live in :mod:`.lowbit_emit`.

NOTE (from the generic-passes helper): the original ``rewrite.py`` was overwritten by mistake at 00:56; its
author has since re-created the helpers in ``lowbit_emit.py``. This module only re-exports them so that
``from .rewrite import ...`` keeps working; it can be deleted once nothing imports it.
"""
from __future__ import annotations

from .lowbit_emit import Emitter, all_names, fresh_name

__all__ = ["all_names", "fresh_name", "Emitter"]
