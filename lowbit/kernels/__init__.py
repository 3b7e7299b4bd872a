"""lowbit.kernels: the kernel library, written in lowbit's DSL."""
