"""lowbit.runtime: a minimal decode runtime for Llama-family models on lowbit's kernels."""
