"""lowbit.lowering.passes: IR-to-IR passes (layout inference, low-bit lowering, simplification, ...).

Importing this package registers every pass with :mod:`.manager`; ``run_passes(kernel, target)`` runs the
target's default pipeline.
"""
from .manager import (PASSES, Lowered, PassContext, PassInfo, PassRecord, default_pipeline, register_pass,
                      run_passes, set_default_pipeline)

# Pass modules register themselves on import; list them here as they are added.
from . import layout_inference  # noqa: F401  (registers infer-layouts)
from . import select_dequant  # noqa: F401  (registers select-dequant)
from . import lowbit_lowering  # noqa: F401  (registers lower-lowbit)
from . import specialize, fold, simplify, cleanup, vectorize  # noqa: F401,E402  (generic passes)
from . import pipelines  # noqa: F401,E402  (default pipelines: keep this import after every pass module)

__all__ = ["PASSES", "Lowered", "PassContext", "PassInfo", "PassRecord", "default_pipeline", "register_pass",
           "run_passes", "set_default_pipeline"]
