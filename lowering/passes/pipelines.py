"""Default pass pipelines per target, registered with :func:`.manager.set_default_pipeline`.

Every target runs the same order (DESIGN.md section 2); what differs per target lives inside the passes
(layouts and dequant methods follow ``ctx.target``):

``specialize -> fold -> infer-layouts -> lower-lowbit -> simplify-indices -> fold -> select-dequant -> cse ->
dce -> vectorize``

``fold`` runs twice: once on the front end's IR (fewer instructions for layout inference) and once after
low-bit lowering and index simplification, which leave constant sub-expressions behind. ``vectorize`` is an
analysis and runs last, so its facts describe the final IR.

Passes that are not registered when this module is imported are left out of the pipelines (the low-bit
passes live in other modules); :mod:`lowbit.lowering.passes` imports it after every pass module.

>>> from lowbit.lowering.passes import default_pipeline
>>> from lowbit.lowering.target import parse_target
>>> default_pipeline(parse_target("tvm:llvm"))[:2]
('specialize', 'fold')
"""
from __future__ import annotations

from .manager import PASSES, set_default_pipeline

#: the full order; names not registered at import time are dropped
FULL_PIPELINE: tuple[str, ...] = ("specialize", "fold", "infer-layouts", "lower-lowbit", "simplify-indices", "fold",
                                  "select-dequant", "cse", "dce", "vectorize")

#: (backend, kind) pairs that get a default pipeline
TARGETS: tuple[tuple[str, str], ...] = (("tvm", "cpu"), ("triton", "cpu"), ("triton", "cuda"), ("tvm", "cuda"))


def available(names: tuple[str, ...] = FULL_PIPELINE) -> tuple[str, ...]:
    """``names`` without the passes that are not registered."""
    return tuple(name for name in names if name in PASSES)


def register_default_pipelines() -> None:
    """(Re-)register the default pipeline of every target from the passes registered now."""
    for backend, kind in TARGETS:
        set_default_pipeline(backend, kind, available())


register_default_pipelines()

__all__ = ["FULL_PIPELINE", "TARGETS", "available", "register_default_pipelines"]
