"""Translation validation: run the reference interpreter before and after every pass of a pipeline on random
inputs and report the first pass that changes a result.

``validate_kernel(kernel, target)`` runs the target's pipeline (or ``passes``) one pass at a time, keeping
the IR and ``ctx.param_formats`` after each, then interprets every version on the same random arguments:

* shape symbols are bound to small values (a few programs per grid axis, a few loop trips), consistent with
  the divisibility the kernel needs: ``K`` a multiple of ``G`` when a shape says ``K // G``, ``H`` a multiple
  of ``HKV`` when the body computes ``H // HKV``;
* tensors get random values of their dtype (codes of low-bit types: random codes); parameters that a pass
  re-stored (``ctx.param_formats``) are packed with the format's ``pack`` before the call and outputs are
  unpacked with ``unpack``, so every version is compared on the logical values;
* outputs (``out`` / ``inout`` tensors) must be bit-identical (NaN matches NaN), unless ``atol`` allows a
  difference.

The report names the first pass whose results differ (or that fails, or that makes the interpreter fault),
the output, the maximum error and the unified diff of the IR before and after the pass. ``lowbit check
FILE --validate`` prints it and exits 1.

>>> from lowbit.ir import KernelBuilder
>>> kb = KernelBuilder("double"); x = kb.tensor_param("x", "f32", ["N"]); kb.set_grid("cdiv(N, 8)")
>>> off = kb.mul(kb.program_id(0), 8); kb.store(x, kb.mul(kb.load(x, [off], [8]), 2.0), [off])
>>> report = validate_kernel(kb.build(), "tvm:llvm", ["fold", "simplify-indices", "cse", "dce"])
>>> report.ok, report.passes
(True, ('fold', 'simplify-indices', 'cse', 'dce'))
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from lowbit.errors import CompileError, LowbitError
from lowbit.ir import interpret, nodes as n, print_kernel, verify
from lowbit.ir.symbolic import Sym, SymOp, dim_eval, dim_subst
from lowbit.ir.types import is_code, kind_of, nbits_of, numpy_dtype

from ..target import Target, parse_target
from .manager import PASSES, PassContext, default_pipeline

_MAX_DIFF_LINES = 120


# ----------------------------------------------------------------------------------------------------
# random inputs
# ----------------------------------------------------------------------------------------------------

@dataclass
class _Needs:
    """What the kernel asks of its shape symbols."""

    multiple: dict[str, int] = field(default_factory=dict)         # S -> S must be a multiple of this
    divided_by: dict[str, set[str]] = field(default_factory=dict)  # S -> symbols T with S % T == 0
    scale: dict[str, int] = field(default_factory=dict)            # S -> a size giving a few tiles / trips


def _int_constants(kernel: n.Kernel, constants: Mapping[str, Any]) -> dict[str, int]:
    out = {}
    for c in kernel.constants:
        v = c.value if c.value is not None else constants.get(c.name)
        if v is not None and kind_of(c.dtype) in ("int", "uint"):
            out[c.name] = int(v)
    return out


def _needs(kernel: n.Kernel, consts: dict[str, int]) -> _Needs:
    needs = _Needs()
    symbols = set(kernel.shape_symbols())

    def need_multiple(name: str, d: int) -> None:
        if d > 1:
            needs.multiple[name] = math.lcm(needs.multiple.get(name, 1), d)

    def scan(d) -> None:
        if isinstance(d, SymOp):
            if d.op in ("//", "%") and isinstance(d.lhs, Sym) and d.lhs.name in symbols and isinstance(d.rhs, int):
                need_multiple(d.lhs.name, d.rhs)
            if d.op == "cdiv" and isinstance(d.lhs, Sym) and isinstance(d.rhs, int):
                needs.scale[d.lhs.name] = max(needs.scale.get(d.lhs.name, 1), d.rhs)
            scan(d.lhs)
            scan(d.rhs)

    for p in kernel.tensor_params:
        for d in p.value.type.shape:
            scan(dim_subst(d, consts))
    for d in kernel.grid:
        d = dim_subst(d, consts)
        scan(d)
        if isinstance(d, Sym):
            needs.scale.setdefault(d.name, 1)
    # the body: floordiv / mod of a symbol by a constant or another symbol; loops over a symbol
    value_sym: dict[str, str] = {}
    value_int: dict[str, int] = {}
    for ins in kernel.walk():
        if isinstance(ins, n.SymbolRef):
            if ins.name in symbols:
                value_sym[ins.result.name] = ins.name
            elif ins.name in consts:
                value_int[ins.result.name] = consts[ins.name]
        elif isinstance(ins, n.Constant) and isinstance(ins.value, int) and not isinstance(ins.value, bool):
            value_int[ins.result.name] = ins.value
        elif isinstance(ins, n.Binary) and ins.op in ("floordiv", "mod"):
            lhs = value_sym.get(ins.lhs.name)
            if lhs is not None and ins.rhs.name in value_sym:
                needs.divided_by.setdefault(lhs, set()).add(value_sym[ins.rhs.name])
            elif lhs is not None and ins.rhs.name in value_int:
                need_multiple(lhs, abs(value_int[ins.rhs.name]))
        elif isinstance(ins, n.For) and ins.stop.name in value_sym and ins.step.name in value_int:
            s = value_sym[ins.stop.name]
            needs.scale[s] = max(needs.scale.get(s, 1), abs(value_int[ins.step.name]))
    return needs


def choose_shape_bindings(kernel: n.Kernel, rng: np.random.Generator,
                          constants: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Small random values for the kernel's shape symbols (see the module docstring)."""
    consts = _int_constants(kernel, dict(constants or {}))
    needs = _needs(kernel, consts)
    order: list[str] = []
    pending = list(kernel.shape_symbols())
    while pending:  # divisors first
        ready = [s for s in pending if not (needs.divided_by.get(s, set()) & set(pending) - {s})]
        pick = ready[0] if ready else pending[0]
        order.append(pick)
        pending.remove(pick)
    values: dict[str, int] = {}
    for s in order:
        base = needs.multiple.get(s, 1)
        for t in needs.divided_by.get(s, ()):
            if t in values and t != s:
                base = math.lcm(base, values[t])
        scale = max(needs.scale.get(s, 4), 1)
        if base > 1:
            top = max(1, min(4, -(-3 * scale // base)))
            values[s] = base * int(rng.integers(1, top + 1))
        else:
            values[s] = int(rng.integers(1, 3 * scale + 1))
    return values


def random_tensor(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random values of a tile dtype in the interpreter's representation (codes of code types as uint8)."""
    if is_code(dtype):
        return rng.integers(0, 1 << nbits_of(dtype), size=shape, dtype=np.uint8)
    kind = kind_of(dtype)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "float":
        return (rng.standard_normal(shape).astype(np.float32)).astype(numpy_dtype(dtype))
    info = np.iinfo(numpy_dtype(dtype))
    if dtype == "int32":
        return rng.integers(-1000, 1001, size=shape).astype(np.int32)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=numpy_dtype(dtype))


def random_scalar(dtype: str, rng: np.random.Generator) -> Any:
    kind = kind_of(dtype)
    if kind == "bool":
        return True
    if kind == "float":
        return np.asarray(rng.uniform(0.5, 1.5), dtype=numpy_dtype(dtype))
    return np.asarray(rng.integers(1, 9), dtype=numpy_dtype(dtype))


def random_arguments(kernel: n.Kernel, rng: np.random.Generator, constants: Mapping[str, Any] | None = None
                     ) -> tuple[dict[str, Any], dict[str, int]]:
    """``(arguments, shape bindings)``: random logical arguments for every parameter of ``kernel``."""
    sizes = choose_shape_bindings(kernel, rng, constants)
    env = {**_int_constants(kernel, dict(constants or {})), **sizes}
    args: dict[str, Any] = {}
    for p in kernel.params:
        t = p.value.type
        if isinstance(p, n.ScalarParam):
            args[p.name] = random_scalar(t.dtype, rng)
        else:
            shape = tuple(max(0, dim_eval(d, env)) for d in t.shape)
            args[p.name] = random_tensor(t.dtype, shape, rng)
    return args, sizes


# ----------------------------------------------------------------------------------------------------
# running and comparing
# ----------------------------------------------------------------------------------------------------

def run_logical(kernel: n.Kernel, param_formats: Mapping[str, Any], args: Mapping[str, Any],
                constants: Mapping[str, Any] | None, sizes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Interpret ``kernel`` on copies of the logical ``args`` (packing re-stored parameters) and return its
    outputs as logical arrays."""
    call: dict[str, Any] = {}
    for p in kernel.params:
        a = args[p.name]
        fmt = param_formats.get(p.name)
        if fmt is not None:
            call[p.name] = np.ascontiguousarray(fmt.pack(np.array(a, copy=True)))
        else:
            call[p.name] = np.array(a, copy=True) if isinstance(a, np.ndarray) else a
    known = {c.name for c in kernel.constants}
    consts = {k: v for k, v in (constants or {}).items() if k in known}
    out = interpret(kernel, call, constants=consts or None, shape_bindings=dict(sizes))
    results: dict[str, np.ndarray] = {}
    for p in kernel.tensor_params:
        if p.intent == "in":
            continue
        fmt = param_formats.get(p.name)
        value = out[p.name]
        results[p.name] = np.asarray(fmt.unpack(value, np.shape(args[p.name])) if fmt is not None else value)
    return results


def compare(expected: np.ndarray, got: np.ndarray, atol: float = 0.0) -> tuple[int, float]:
    """``(number of differing elements, max |difference|)``; bit-identical values (and NaN vs NaN) match."""
    if expected.shape != got.shape:
        return max(expected.size, got.size, 1), math.inf
    if expected.dtype != got.dtype:
        return expected.size, math.inf
    a, b = np.ascontiguousarray(expected), np.ascontiguousarray(got)
    width = a.dtype.itemsize
    same = (a.view(np.uint8).reshape(a.shape + (width,)) == b.view(np.uint8).reshape(b.shape + (width,))).all(-1)
    wide_a, wide_b = a.astype(np.float64), b.astype(np.float64)
    both_nan = np.isnan(wide_a) & np.isnan(wide_b)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(both_nan | same, 0.0, np.abs(wide_a - wide_b))
    err = np.where(np.isnan(err), math.inf, err)
    bad = ~(same | both_nan) & ((err > atol) if atol > 0 else True)  # exact: any other bit pattern differs
    return int(bad.sum()), float(err[bad].max()) if bad.any() else 0.0


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mismatch:
    """The first pass whose output differs from the input kernel's (or that failed)."""

    pass_name: str
    position: int                 # 1-based position in the pipeline (0: the input kernel itself)
    output: Optional[str]         # the differing output tensor (None: the pass or the run failed)
    differing: int                # number of differing elements
    max_error: float
    detail: str
    ir_diff: str
    shape_bindings: Mapping[str, int]


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_kernel` found. ``ok`` when every pass kept every output identical."""

    kernel: str
    target: str
    passes: tuple[str, ...]
    trials: tuple[Mapping[str, int], ...]
    mismatch: Optional[Mismatch] = None

    @property
    def ok(self) -> bool:
        return self.mismatch is None

    def format(self) -> str:
        """A human-readable report (a one-liner when everything matched)."""
        head = f"validate {self.kernel} for {self.target}"
        if self.ok:
            sizes = "; ".join(", ".join(f"{k}={v}" for k, v in t.items()) or "no shape symbols" for t in self.trials)
            return (f"{head}: {len(self.passes)} passes ({', '.join(self.passes)}) keep every output identical "
                    f"on {len(self.trials)} random input(s) [{sizes}]")
        m = self.mismatch
        where = "the input kernel" if m.position == 0 else f"pass {m.pass_name!r} (#{m.position} of {len(self.passes)})"
        sizes = ", ".join(f"{k}={v}" for k, v in m.shape_bindings.items()) or "no shape symbols"
        lines = [f"{head}: FAILED at {where}"]
        if m.output is not None:
            lines.append(f"  output {m.output!r}: {m.detail}, max error {m.max_error:g}")
        else:
            lines.append(f"  {m.detail}")
        lines.append(f"  shapes: {sizes}")
        if m.ir_diff:
            lines.append("  IR diff:")
            lines.extend("    " + line for line in m.ir_diff.splitlines())
        return "\n".join(lines)


def _diff(before: Optional[n.Kernel], after: Optional[n.Kernel], name: str) -> str:
    if before is None or after is None:
        return ""
    lines = list(difflib.unified_diff(print_kernel(before).splitlines(), print_kernel(after).splitlines(),
                                      f"before {name}", f"after {name}", lineterm="", n=2))
    if len(lines) > _MAX_DIFF_LINES:
        lines = lines[:_MAX_DIFF_LINES] + [f"... ({len(lines) - _MAX_DIFF_LINES} more lines)"]
    return "\n".join(lines)


def _run_pipeline(kernel: n.Kernel, target: Target, names: Sequence[str], constants: Mapping[str, Any],
                  options: Mapping[str, Any]) -> tuple[list[tuple[str, n.Kernel, dict]], Optional[tuple[int, str]]]:
    """``[(pass, kernel after it, param_formats)]``, stopping at the first pass that raises
    (returned as ``(position, message)``)."""
    ctx = PassContext(target=target, constants=dict(constants), options=dict(options))
    history = [("input", kernel, {})]
    for position, name in enumerate(names, start=1):
        try:
            kernel = PASSES[name].run(kernel, ctx)
            verify(kernel)
        except LowbitError as err:
            return history, (position, f"the pass failed: {type(err).__name__}: {err}")
        except Exception as err:  # a crash inside a pass is exactly what validation reports
            return history, (position, f"the pass crashed: {type(err).__name__}: {err}")
        history.append((name, kernel, dict(ctx.param_formats)))
    return history, None


def validate_kernel(kernel: n.Kernel, target: Target | str = "tvm:llvm", passes: Sequence[str] | None = None, *,
                    constants: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
                    trials: int = 2, seed: int = 0, atol: float = 0.0, attempts: int = 6) -> ValidationReport:
    """Check that every pass of the pipeline keeps the interpreter's results (see the module docstring).

    ``trials`` random inputs are used; a random input on which the *input* kernel itself faults (e.g. an
    integer division by a size that came out 0) is redrawn, up to ``attempts`` times per trial."""
    target = parse_target(target) if isinstance(target, str) else target
    names = tuple(passes) if passes is not None else default_pipeline(target)
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise CompileError(f"unknown pass(es) {', '.join(unknown)}",
                           hint="registered passes: " + ", ".join(sorted(PASSES)))
    constants = dict(constants or {})
    history, failure = _run_pipeline(kernel, target, names, constants, dict(options or {}))
    rng = np.random.default_rng(seed)
    used: list[dict[str, int]] = []
    for _ in range(max(1, trials)):
        reference = None
        last_error = ""
        for _attempt in range(max(1, attempts)):
            args, sizes = random_arguments(kernel, rng, constants)
            try:
                reference = run_logical(kernel, {}, args, constants, sizes)
                break
            except LowbitError as err:
                last_error = f"{type(err).__name__}: {err}"
        if reference is None:
            return ValidationReport(kernel.name, str(target), names, tuple(used), Mismatch(
                "input", 0, None, 0, 0.0, f"no random input found on which the input kernel runs ({last_error})",
                "", sizes))
        used.append(sizes)
        previous: Optional[tuple[n.Kernel, dict, dict]] = None
        for position, (name, k, formats) in enumerate(history[1:], start=1):
            before = history[position - 1][1]
            if previous is not None and previous[0] is k and previous[1] == formats:
                results = previous[2]
            else:
                try:
                    results = run_logical(k, formats, args, constants, sizes)
                except Exception as err:  # an interpreter fault after a pass (e.g. a wrong in-bounds proof)
                    return ValidationReport(kernel.name, str(target), names, tuple(used), Mismatch(
                        name, position, None, 0, 0.0, f"the interpreter fails after this pass: "
                        f"{type(err).__name__}: {err}", _diff(before, k, name), sizes))
            for out_name, want in reference.items():
                got = results.get(out_name)
                count, err = compare(want, got, atol) if got is not None else (want.size, math.inf)
                if count:
                    return ValidationReport(kernel.name, str(target), names, tuple(used), Mismatch(
                        name, position, out_name, count, err, f"{count} of {want.size} element(s) differ from the "
                        f"input kernel's", _diff(before, k, name), sizes))
            previous = (k, formats, results)
    if failure is not None:
        position, message = failure
        return ValidationReport(kernel.name, str(target), names, tuple(used), Mismatch(
            names[position - 1], position, None, 0, 0.0, message, "", used[-1] if used else {}))
    return ValidationReport(kernel.name, str(target), names, tuple(used))


__all__ = ["validate_kernel", "ValidationReport", "Mismatch", "random_arguments", "choose_shape_bindings",
           "random_tensor", "run_logical", "compare"]
