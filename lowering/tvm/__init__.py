"""lowbit.lowering.tvm: the TVM backend (TensorIR; LLVM for CPUs, CUDA source for GPUs). Imports TVM lazily."""
