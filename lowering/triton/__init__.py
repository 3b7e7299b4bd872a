"""lowbit.lowering.triton: the Triton backend (generated @triton.jit source, interpreter on CPU, AOT PTX/cubin)."""
