"""lowbit.lowering.passes: IR-to-IR passes (layout inference, low-bit lowering, simplification, ...).

Importing this package registers every pass with :mod:`.manager`; ``run_passes(kernel, target)`` runs the
target's default pipeline.
"""
from .manager import (PASSES, Lowered, PassContext, PassInfo, PassRecord, default_pipeline, register_pass,
                      run_passes, set_default_pipeline)

# Pass modules register themselves on import; list them here as they are added.

__all__ = ["PASSES", "Lowered", "PassContext", "PassInfo", "PassRecord", "default_pipeline", "register_pass",
           "run_passes", "set_default_pipeline"]
