"""lowbit.dsl: the tile-level kernel language (one lark grammar for kernel files and @lowbit.jit functions)."""
