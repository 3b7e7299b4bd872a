"""Code generation for value instructions: casts, bit views, elementwise math, dot, reductions, shapes.

Every rule follows the IR README exactly (the interpreter :func:`lowbit.ir.interpret` is the oracle):

* f16 transcendental functions and divisions compute in f32 and round once; f16 ``+ - *`` are native
  (correctly rounded, equal to f32-then-round). bf16 values live in f32 and are re-rounded with an exact
  helper after every op (see :mod:`.dtypes`).
* float -> int casts round half to even and saturate (NaN -> 0); int -> bf16 rounds once; int -> int wraps.
* signed ``floordiv`` / ``mod`` follow Python (Triton truncates); ``shr`` is arithmetic for signed types.
* ``div`` is IEEE (``tl.div_rn``), ``sqrt`` is ``tl.sqrt_rn``, ``minimum``/``maximum`` propagate NaN.
* ``dot`` uses ``tl.dot`` (f32 inputs with ``input_precision="ieee"``) when every dimension is at least
  16 (32 for the K of int8); smaller products (and uint8) multiply-broadcast and sum in the accumulator's
  dtype. Padded K lanes are zeroed first.
"""
from __future__ import annotations

from lowbit.errors import CompileError
from lowbit.ir import nodes as n
from lowbit.ir.types import kind_of, nbits_of

from .dtypes import TL_NAMES, int_range, register_tl, uint_tl
from .helpers import f2i_helper
from .names import index_expr, padded, pow2

__all__ = ["ComputeMixin"]

_FLOAT_FN = {
    "exp": "tl.exp({})", "exp2": "tl.exp2({})", "log": "tl.log({})", "log2": "tl.log2({})",
    "sqrt": "tl.sqrt_rn({})", "rsqrt": "tl.rsqrt({})", "sigmoid": "tl.sigmoid({})",
}
_CMP = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
#: integer ops whose result is >= 0 when both operands are (lets loads skip the ``index >= 0`` mask)
_KEEPS_NONNEG = ("add", "mul", "floordiv", "mod", "minimum", "maximum", "and", "shr")
_INFIX = {"add": "+", "sub": "-", "mul": "*", "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>"}


class ComputeMixin:
    """``op_*`` methods for the value instructions (mixed into the emitter)."""

    # ------------------------------------------------------------------------------------------------
    # float helpers
    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _as_f32(x: str, dtype: str) -> str:
        """A float tile's value in float32 (bf16 is already carried in f32)."""
        return f"{x}.to(tl.float32)" if dtype == "float16" else x

    def _narrow(self, expr: str, dtype: str) -> str:
        """A float32 result rounded to float ``dtype`` (the IR rounds after every instruction)."""
        if dtype == "float16":
            return f"({expr}).to(tl.float16)"
        if dtype == "bfloat16":
            return self.call("round_bf16", expr)
        return expr

    # ------------------------------------------------------------------------------------------------
    # conversions
    # ------------------------------------------------------------------------------------------------

    def cast_expr(self, x: str, src: str, dst: str) -> str:
        """``x`` (register dtype of IR ``src``) converted to IR ``dst`` with the IR's cast rules."""
        if src == dst:
            return x
        sk, dk = kind_of(src), kind_of(dst)
        if dk == "bool":
            return f"({x} != {'0.0' if sk == 'float' else '0'})"
        if sk == "bool":
            return f"{x}.to({register_tl(dst)})"
        if sk == "float" and dk == "float":
            if dst == "float32":
                return self._as_f32(x, src)
            if dst == "float16":
                return f"{x}.to(tl.float16)"
            return self.call("round_bf16", self._as_f32(x, src))
        if sk == "float":
            return self.call(f2i_helper(dst), self._as_f32(x, src))
        if dk == "float":
            if dst != "bfloat16":
                return f"{x}.to({TL_NAMES[dst]})"
            if src in ("int32", "uint32"):
                return self.call(f"{src}_to_bf16", x)
            return self.call("round_bf16", f"{x}.to(tl.float32)")
        return f"{x}.to({TL_NAMES[dst]})"

    def op_Cast(self, ins: n.Cast) -> None:
        self.alias(ins.result, self.cast_expr(self.use(ins.x), ins.x.dtype, ins.result.dtype))

    def _bits(self, x: str, dtype: str) -> str:
        """The unsigned bit patterns of a tile (uint of the dtype's width)."""
        kind = kind_of(dtype)
        if kind == "uint":
            return x
        if dtype == "bfloat16":
            return self.call("bf16_bits", x)
        return f"{x}.to({uint_tl(nbits_of(dtype))}, bitcast=True)"

    def _from_bits(self, u: str, dtype: str) -> str:
        if kind_of(dtype) == "uint":
            return u
        if dtype == "bfloat16":
            return self.call("bf16_from_bits", u)
        return f"{u}.to({TL_NAMES[dtype]}, bitcast=True)"

    def op_View(self, ins: n.View) -> None:
        src, dst = ins.x.dtype, ins.result.dtype
        ns, nd = nbits_of(src), nbits_of(dst)
        rank = ins.x.type.rank
        bits = self._bits(self.use(ins.x), src)
        out_shape = list(padded(tuple(ins.result.shape)))
        if ns > nd:  # split each word into k narrower fields, lowest bits first
            k = ns // nd
            wide = self.fresh(f"{ins.result.name}_w")
            self.line(f"{wide} = {bits}")
            expanded = f"{wide}[{', '.join([':'] * rank + ['None'])}]"
            shifts = index_expr(f"(tl.arange(0, {k}) * {nd}).to({uint_tl(ns)})", rank, rank + 1)
            bits = f"tl.reshape(({expanded} >> {shifts}).to({uint_tl(nd)}), {out_shape})"
        elif ns < nd:  # join k consecutive fields into one word, first field lowest
            k = nd // ns
            grouped = self.fresh(f"{ins.result.name}_g")
            self.line(f"{grouped} = tl.reshape({bits}.to({uint_tl(nd)}), {out_shape + [k]})")
            shifts = index_expr(f"(tl.arange(0, {k}) * {ns}).to({uint_tl(nd)})", rank, rank + 1)
            bits = f"tl.sum({grouped} << {shifts}, axis={rank}).to({uint_tl(nd)})"
        self.alias(ins.result, self._from_bits(bits, dst))

    # ------------------------------------------------------------------------------------------------
    # elementwise
    # ------------------------------------------------------------------------------------------------

    def op_Unary(self, ins: n.Unary) -> None:
        x, dtype, op = self.use(ins.x), ins.x.dtype, ins.op
        kind = kind_of(dtype)
        if op == "not":
            expr = f"~{x}"
        elif op == "neg":
            # Triton lowers a float's unary minus to 0 - x natively, which makes -(+0.0) +0.0; a product with -1
            # flips the sign of zeros too (and is exact)
            expr = f"{x} * -1.0" if kind == "float" else f"-{x}"
        elif op == "abs":
            expr = f"tl.abs({x})"
        elif op in ("floor", "ceil"):
            expr = f"tl.{op}({x})" if dtype != "float16" else f"tl.{op}({x}.to(tl.float32)).to(tl.float16)"
        elif op == "tanh":
            expr = self._narrow(self.call("tanh", self._as_f32(x, dtype)), dtype)
        elif op in _FLOAT_FN and kind == "float":
            expr = self._narrow(_FLOAT_FN[op].format(self._as_f32(x, dtype)), dtype)
        else:  # pragma: no cover - the verifier rejects other combinations
            raise CompileError(f"unary {op} on {dtype} has no Triton form", location=ins.loc)
        self.alias(ins.result, expr)

    def op_Binary(self, ins: n.Binary) -> None:
        a, b, dtype, op = self.use(ins.lhs), self.use(ins.rhs), ins.lhs.dtype, ins.op
        kind = kind_of(dtype)
        if op in _CMP:
            expr = f"{a} {_CMP[op]} {b}"
        elif op in ("minimum", "maximum"):
            nan = ", propagate_nan=tl.PropagateNan.ALL" if kind == "float" else ""
            expr = f"tl.{op}({a}, {b}{nan})"
        elif kind == "float":
            expr = self._float_binary(op, a, b, dtype)
        elif op in ("floordiv", "mod"):
            # Triton truncates; that is floor division when neither operand is negative
            plain = kind == "uint" or {ins.lhs.name, ins.rhs.name} <= self.nonneg
            if plain:
                expr = f"{a} {'//' if op == 'floordiv' else '%'} {b}"
            else:
                expr = self.call(op, a, b)
        else:
            expr = f"{a} {_INFIX[op]} {b}"
        if kind == "int" and op in _KEEPS_NONNEG and {ins.lhs.name, ins.rhs.name} <= self.nonneg:
            self.nonneg.add(ins.result.name)
        self.alias(ins.result, expr)

    def _float_binary(self, op: str, a: str, b: str, dtype: str) -> str:
        if op in ("add", "sub", "mul"):
            if dtype == "bfloat16":
                return self.call("round_bf16", f"{a} {_INFIX[op]} {b}")
            return f"{a} {_INFIX[op]} {b}"  # f16: a correctly rounded f16 op equals f32-then-round
        fa, fb = self._as_f32(a, dtype), self._as_f32(b, dtype)
        if op == "div":
            return self._narrow(f"tl.div_rn({fa}, {fb})", dtype)
        if op == "floordiv":
            return self._narrow(self.call("floordiv_f", fa, fb), dtype)
        if op == "mod":
            return self._narrow(self.call("fmod_floor", fa, fb), dtype)
        raise CompileError(f"binary {op} on {dtype} has no Triton form")  # pragma: no cover

    def op_Where(self, ins: n.Where) -> None:
        self.alias(ins.result, f"tl.where({self.use(ins.cond)}, {self.use(ins.x)}, {self.use(ins.y)})")

    def op_Lookup(self, ins: n.Lookup) -> None:
        """``table[x mod size]`` as a balanced tree of ``tl.where`` over the index bits (Triton has no register
        gather; the dequant rule offers ``lookup`` where a target has one, so this is the portable form)."""
        size = len(ins.table)
        idx = self.fresh(f"{ins.result.name}_i")
        self.line(f"{idx} = ({self.use(ins.x)} & {size - 1}).to(tl.int32)")
        level = [self.typed_literal(v, ins.result.dtype) for v in ins.table]
        bit = 0
        while len(level) > 1:
            sel = self.fresh(f"{ins.result.name}_b{bit}")
            self.line(f"{sel} = ({idx} >> {bit}) & 1 != 0")
            level = [lo if lo == hi else f"tl.where({sel}, {hi}, {lo})" for lo, hi in zip(level[0::2], level[1::2])]
            bit += 1
        expr = level[0]
        if not expr.startswith("tl.where"):   # every entry equal: a tile of it
            expr = f"tl.full({idx}.shape, {expr}, {register_tl(ins.result.dtype)})"
        self.alias(ins.result, expr)

    # ------------------------------------------------------------------------------------------------
    # dot and reductions
    # ------------------------------------------------------------------------------------------------

    def op_Dot(self, ins: n.Dot) -> None:
        a, b, acc = self.use(ins.a), self.use(ins.b), self.use(ins.acc)
        dtype, acc_dtype = ins.a.dtype, ins.acc.dtype
        m, k = (int(s) for s in ins.a.shape)
        nn = int(ins.b.shape[1])
        pm, pk, pn = pow2(m), pow2(k), pow2(nn)
        if pk != k:  # padding lanes of K must not contribute
            zero = self.typed_literal(0.0 if kind_of(dtype) == "float" else 0, dtype)
            za, zb = self.fresh(f"{ins.a.name}_k"), self.fresh(f"{ins.b.name}_k")
            self.line(f"{za} = tl.where(tl.arange(0, {pk})[None, :] < {k}, {a}, {zero})")
            self.line(f"{zb} = tl.where(tl.arange(0, {pk})[:, None] < {k}, {b}, {zero})")
            a, b = za, zb
        min_k = 32 if dtype == "int8" else 16
        tensor_core = dtype != "uint8" and pm >= 16 and pn >= 16 and pk >= min_k
        if not tensor_core:
            t = register_tl(acc_dtype)
            prod = f"{a}.to({t})[:, :, None] * {b}.to({t})[None, :, :]"
            self.alias(ins.result, f"{acc} + tl.sum({prod}, axis=1)")
            return
        if dtype == "float32":
            self.alias(ins.result, f'tl.dot({a}, {b}, {acc}, input_precision="ieee")')
        elif dtype == "bfloat16":  # carried in f32: bf16 tensor cores natively, exact f32 dot when interpreted
            self.uses_flag = True
            name = self.define(ins.result)
            self.line("if NATIVE_BF16_DOT:")
            self.line(f"    {name} = tl.dot({a}.to(tl.bfloat16), {b}.to(tl.bfloat16), {acc})")
            self.line("else:")
            self.line(f'    {name} = tl.dot({a}, {b}, {acc}, input_precision="ieee")')
        else:
            self.alias(ins.result, f"tl.dot({a}, {b}, {acc})")

    def _identity(self, op: str, dtype: str) -> str:
        if op == "sum":
            return self.typed_literal(0.0 if kind_of(dtype) == "float" else 0, dtype)
        if kind_of(dtype) == "float":
            return self.typed_literal(float("-inf") if op == "max" else float("inf"), dtype)
        lo, hi = int_range(dtype)
        return self.typed_literal(lo if op == "max" else hi, dtype)

    def op_Reduce(self, ins: n.Reduce) -> None:
        x, dtype, axis = self.use(ins.x), ins.x.dtype, ins.axis
        shape = tuple(int(s) for s in ins.x.shape)
        rank = len(shape)
        phys = padded(shape)
        if phys[axis] != shape[axis]:
            valid = index_expr(f"tl.arange(0, {phys[axis]})", axis, rank)
            x = f"tl.where({valid} < {shape[axis]}, {x}, {self._identity(ins.op, dtype)})"
        kd = ", keep_dims=True" if ins.keepdims else ""
        if ins.op == "sum" and kind_of(dtype) == "float":
            expr = self._narrow(f"tl.sum({self._as_f32(x, dtype)}, axis={axis}{kd})", dtype)
        else:
            expr = f"tl.{ins.op}({x}, axis={axis}{kd})"
            if kind_of(dtype) != "float":
                expr += f".to({TL_NAMES[dtype]})"  # tl.sum widens narrow ints; wrap back as the IR does
        self.alias(ins.result, expr)

    # ------------------------------------------------------------------------------------------------
    # shapes
    # ------------------------------------------------------------------------------------------------

    def op_Broadcast(self, ins: n.Broadcast) -> None:
        x = self.use(ins.x)
        src, dst = tuple(ins.x.shape), tuple(ins.result.shape)
        if src == dst:
            self.alias(ins.result, x)
            return
        if 0 < len(src) < len(dst):
            x = f"{x}[{', '.join(['None'] * (len(dst) - len(src)) + [':'] * len(src))}]"
        self.alias(ins.result, f"tl.broadcast_to({x}, {list(padded(dst))})")

    def op_Reshape(self, ins: n.Reshape) -> None:
        x = self.use(ins.x)
        src = tuple(int(s) for s in ins.x.shape)
        dst = tuple(int(s) for s in ins.result.shape)
        same_dims = [d for d in src if d != 1] == [d for d in dst if d != 1]   # only unit axes change
        cheap = same_dims or (_padding_commutes(src) and _padding_commutes(dst))
        view = self.load_views.get(ins.x.name)
        if view is not None:
            view = self.load_views[ins.result.name] = view.reshaped(dst)
            if not cheap:           # loaded again in the new arrangement, not gathered (see emit_memory)
                self.alias(ins.result, self._view_load(view, ins.result.name))
                return
        if cheap:
            self.alias(ins.result, f"tl.reshape({x}, {list(padded(dst))})")
            return
        # General case: each physical output lane gathers its logical element from the flat input.
        psrc, pdst = padded(src), padded(dst)
        rank = len(dst)
        terms = []
        stride = 1
        lstrides = []
        for d in reversed(dst):
            lstrides.append(stride)
            stride *= d
        lstrides.reverse()
        for ax in range(rank):
            ar = f"tl.minimum(tl.arange(0, {pdst[ax]}), {dst[ax] - 1})"
            terms.append(f"{index_expr(ar, ax, rank)} * {lstrides[ax]}")
        flat = self.fresh(f"{ins.result.name}_lin")
        self.line(f"{flat} = {' + '.join(terms)}")
        parts = []
        lstride = 1
        pstride = 1
        for s, p in zip(reversed(src), reversed(psrc)):
            parts.append(f"(({flat} // {lstride}) % {s}) * {pstride}")
            lstride *= s
            pstride *= p
        index = self.fresh(f"{ins.result.name}_idx")
        total_src = 1
        for p in psrc:
            total_src *= p
        total_dst = 1
        for p in pdst:
            total_dst *= p
        self.line(f"{index} = tl.reshape({' + '.join(parts)}, [{total_dst}])")
        gathered = f"tl.gather(tl.reshape({x}, [{total_src}]), {index}, 0)"
        self.alias(ins.result, f"tl.reshape({gathered}, {list(pdst)})")

    def op_Permute(self, ins: n.Permute) -> None:
        x = self.use(ins.x)
        view = self.load_views.get(ins.x.name)
        if view is not None:
            self.load_views[ins.result.name] = view.permuted(tuple(ins.perm))
        if ins.x.type.rank < 2 or list(ins.perm) == list(range(ins.x.type.rank)):
            self.alias(ins.result, x)
        else:
            self.alias(ins.result, f"tl.permute({x}, {list(ins.perm)})")

    def op_ExpandDims(self, ins: n.ExpandDims) -> None:
        self.alias(ins.result, f"tl.expand_dims({self.use(ins.x)}, {ins.axis})")


def _padding_commutes(shape: tuple[int, ...]) -> bool:
    """True when a row-major reshape of the padded tile equals padding the reshaped tile: every size
    other than the first one above 1 is a power of two."""
    big = [d for d in shape if d != 1]
    return all(d == pow2(d) for d in big[1:])
