"""@lowbit.jit: one front end for Python functions, real file positions, Python-scope constants, running."""
from __future__ import annotations

import inspect
import textwrap

import numpy as np
import pytest

from lowbit.errors import BackendError, CompileError
from lowbit.jit import JitFunction, jit

SCALE = 3.0
BLOCK_FROM_PYTHON = 8


@jit
def scale_add(x: f32[N], y: f32[N], out: Out[f32[N]], alpha: f32, BLOCK: const = 16):
    """out = alpha * x + SCALE * y (SCALE from the module)."""
    grid(cdiv(N, BLOCK))
    o = block(0) * BLOCK
    store(out, alpha * load(x, [o], [BLOCK]) + SCALE * load(y, [o], [BLOCK]), [o])


@jit(backend="interpret")
def branchy(x: f32[N], out: Out[f32[N]], DOUBLE: bool = True):
    grid(cdiv(N, BLOCK_FROM_PYTHON))
    o = block(0) * BLOCK_FROM_PYTHON
    t = load(x, [o], [BLOCK_FROM_PYTHON])
    if DOUBLE:                       # compile time: only the taken branch exists
        t = t * 2.0
    else:
        t = t + undefined_on_purpose  # never analyzed when DOUBLE
    if block(0) % 2 == 1:            # run time: an IR `if` with `t` as its result
        t = -t
    n = 0
    for i in range(0, 3):            # a compile-time int reassigned in a loop becomes a carried i32
        n = n + i
    store(out, t + cast(n, f32), [o])


def test_scalar_param_module_constant_and_default_constant():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(37).astype(np.float32), rng.standard_normal(37).astype(np.float32)
    out = np.zeros(37, np.float32)
    scale_add(x, y, out, np.float32(0.5))
    ref = np.float32(0.5) * x + np.float32(3.0) * y  # f32 arithmetic, the same operations in the same order
    np.testing.assert_array_equal(out, ref)
    assert isinstance(scale_add, JitFunction) and scale_add.__doc__.startswith("out = alpha")
    assert [p.name for p in scale_add.ir().params] == ["x", "y", "out", "alpha"]


def test_static_and_runtime_if_and_carried_int():
    x = np.arange(24, dtype=np.float32)
    out = np.zeros(24, np.float32)
    branchy(x, out)
    blocks = np.arange(24) // 8
    ref = np.where(blocks % 2 == 1, -(x * 2), x * 2) + 3.0
    np.testing.assert_array_equal(out, ref)
    with pytest.raises(CompileError, match="unknown name 'undefined_on_purpose'"):
        branchy.ir(DOUBLE=False)
    from lowbit.ir import For, If, walk

    kinds = [type(i).__name__ for i in walk(branchy.ir().body) if isinstance(i, (If, For))]
    assert kinds == ["If", "For"]


def test_ir_is_cached_per_constants():
    assert scale_add.ir() is scale_add.ir()
    assert scale_add.ir(BLOCK=32) is not scale_add.ir()
    assert "cdiv(N, 32)" in str(scale_add.ir(BLOCK=32))


def test_error_location_is_in_the_real_file():
    @jit
    def broken(x: f32[N], y: Out[f32[N]]):
        grid(cdiv(N, 4))
        store(y, lod(x), [0])

    lines, start = inspect.getsourcelines(broken.fn)
    with pytest.raises(CompileError) as info:
        broken.ir()
    loc = info.value.location
    bad_line = next(i for i, text in enumerate(lines) if "lod(x)" in text)
    assert loc.file == __file__
    assert loc.line == start + bad_line
    assert loc.column == lines[bad_line].index("lod") + 1
    assert loc.source_line.strip() == "store(y, lod(x), [0])"
    assert f"{__file__}:{loc.line}:{loc.column}: error: unknown name 'lod'" in str(info.value)


def test_multiline_decorator_is_skipped():
    @jit(
        backend="interpret",
    )
    def kern(x: f32[N],
             y: Out[f32[N]]):
        grid(1)
        store(y, load(x, [0], [4]) + 1.0, [0])

    assert kern.source_ast.name == "kern"
    assert kern.kernel_source.real_line(kern.source_ast.span.line) == inspect.getsourcelines(kern.fn)[1] + 3
    x = np.arange(4, dtype=np.float32)
    y = np.zeros(4, np.float32)
    kern(x, y)
    np.testing.assert_array_equal(y, x + 1)


def test_closure_constants_and_unusable_python_objects():
    table = np.zeros(3)

    @jit
    def uses_closure(x: f32[N], y: Out[f32[N]]):
        grid(cdiv(N, block_size))
        o = block(0) * block_size
        store(y, load(x, [o], [block_size]), [o])

    block_size = 4  # a closure cell, read when the kernel is compiled
    assert "cdiv(N, 4)" in str(uses_closure.ir())

    @jit
    def uses_array(x: f32[N], y: Out[f32[N]]):
        grid(1)
        store(y, load(x, [0], [4]) * table, [0])

    with pytest.raises(CompileError) as info:
        uses_array.ir()
    assert "'table' is a Python numpy.ndarray, which a kernel cannot use" in info.value.message


def test_python_int_shadowing_an_intrinsic_is_reported():
    block = 4  # noqa: F841 - the kernel sees it

    @jit
    def shadow(x: f32[N], y: Out[f32[N]]):
        grid(1)
        o = block(0)

    with pytest.raises(CompileError) as info:
        shadow.ir()
    assert "'block' is the int 4 and cannot be called" in info.value.message
    assert "shadows the built-in block()" in info.value.hint


def test_call_mistakes():
    x = np.zeros(8, np.float32)
    with pytest.raises(CompileError, match=r"takes 4 tensor/scalar arguments \(x, y, out, alpha\), got 2"):
        scale_add(x, x)
    with pytest.raises(CompileError, match="unknown target 'cuda9'"):
        scale_add.run(x, x, x, 1.0, backend="cuda9")
    with pytest.raises(CompileError, match="kernel 'scale_add' has no constant 'BLOCKS'"):
        scale_add.ir(BLOCKS=3)
    from lowbit.errors import KernelArgumentError

    with pytest.raises(KernelArgumentError, match="argument y must be a float32 array"):
        scale_add(x, x.astype(np.float64), x, 1.0)


def test_intrinsics_from_python_are_mistakes_and_star_import_is_safe():
    import lowbit.dsl as dsl

    with pytest.raises(CompileError, match="only be used inside a kernel"):
        dsl.load(1, 2, 3)
    namespace: dict = {}
    exec("from lowbit.dsl import *", namespace)
    assert "load" in namespace and "f16" in namespace and "Out" in namespace
    assert "sum" not in namespace and "max" not in namespace  # Python's own stay untouched


def _module(tmp_path, name, text):
    import importlib.util

    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, path


def test_without_future_annotations_symbols_and_subscriptable_dtypes(tmp_path):
    mod, _ = _module(tmp_path, "nofuture_ok", """
        from lowbit.dsl import Out, f16, symbols, const
        from lowbit.jit import jit
        M, N = symbols("M N")

        @jit
        def copy(x: f16[M, N], y: Out[f16[M, N]], B: const = 4):
            grid(cdiv(M, B), cdiv(N, B))
            o = [block(0) * B, block(1) * B]
            store(y, load(x, o, [B, B]), o)
        """)
    assert not mod.copy.uses_future_annotations
    x = np.arange(30, dtype=np.float16).reshape(5, 6)
    y = np.zeros_like(x)
    mod.copy(x, y)
    np.testing.assert_array_equal(x, y)


def test_without_future_annotations_undeclared_names_fail_in_python(tmp_path):
    with pytest.raises(NameError, match="'M' is not defined"):
        _module(tmp_path, "nofuture_bad", """
            from lowbit.dsl import f16
            from lowbit.jit import jit

            @jit
            def k(x: f16[M]):
                grid(1)
            """)


def test_without_future_annotations_a_non_size_name_explains_both_ways(tmp_path):
    mod, path = _module(tmp_path, "nofuture_wrong", """
        from lowbit.dsl import f16
        from lowbit.jit import jit
        M = "rows"

        @jit
        def k(x: f16[M]):
            grid(1)
        """)
    with pytest.raises(CompileError) as info:
        mod.k.ir()
    err = info.value
    assert "'M' in a shape is a Python str, not a size" in err.message, str(err)
    assert "symbols" in err.hint and "from __future__ import annotations" in err.hint
    assert (err.location.file, err.location.line, err.location.column) == (str(path), 7, 14)


def test_source_unavailable():
    namespace: dict = {}
    exec("def k(x):\n    pass\n", namespace)
    with pytest.raises(CompileError, match="cannot read the source of 'k'"):
        jit(namespace["k"]).ir()


def test_lowbit_jit_is_the_decorator_even_after_importing_the_module():
    import lowbit
    import lowbit.jit  # noqa: F401  (must not rebind lowbit.jit to the module)

    @lowbit.jit
    def k1(x: f32[N]):
        grid(1)

    @lowbit.jit(backend="interpret")
    def k2(x: f32[N]):
        grid(1)

    assert all(isinstance(k, JitFunction) for k in (k1, k2))
    assert k2.ir().name == "k2"
