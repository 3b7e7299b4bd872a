"""lowbit.kernels: the kernel library, written in lowbit's DSL, and the host code that specializes it.

Kernel files (``lowbit check lowbit/kernels/<file> -k <kernel>`` prints any of them):

============================  ===========================================================================
``matmul.lbk``                ``lowbit_matmul``: ``x [M, K]`` times a low-bit weight of any 1-8 bit type
                              with group scales and optional zeros (GEMV and GEMM paths, split-K);
                              ``splitk_reduce``: sums split-K partials, adds the bias
``attention.lbk``             ``decode_attention``: one query per sequence over the paged ``paged-kv/v1`` or ``/v2``
                              cache (any cache type, GQA, sliding window, split-KV);
                              ``attention_merge``: the exact log-sum-exp merge of split-KV parts;
                              ``kv_quantize``: quantizes new tokens into their pages (int/uint codes);
                              ``kv_store``: rounds new tokens into a dense cache (keys and values at once);
                              ``kv_scatter``: writes tokens quantized on the host into their pages
``decoder.lbk``               the decoder layer's small kernels: ``rms_norm``, ``rope`` (rotary embeddings),
                              ``silu_mul`` (the MLP's gated SiLU), each one launch rounding to the next
                              kernel's input type
============================  ===========================================================================

Host modules: :mod:`.library` (load, specialize, compile through :func:`lowbit.driver.compile_ir`),
:mod:`.matmul`, :mod:`.attention` and :mod:`.decoder` (configurations, weight preparation, launches). The public
entry points are :mod:`lowbit.ops`: ``matmul``, ``decode_attention``, ``kv_append``, ``rms_norm``, ``rope``,
``silu_mul``.
"""
