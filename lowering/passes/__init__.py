"""lowbit.lowering.passes: IR-to-IR passes (layout inference, low-bit lowering, simplification, ...)."""
