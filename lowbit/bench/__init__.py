"""lowbit.bench: measuring instruments (memory bandwidth, kernel timings) for `lowbit bench`."""
