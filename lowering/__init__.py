"""lowbit.lowering: passes over the tile IR and the Triton / TVM backends."""
