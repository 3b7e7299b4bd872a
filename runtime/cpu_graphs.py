"""Decode steps replayed on a CPU: the step's kernel launches and torch ops recorded once, then repeated as a list.

A decode step of a 1B Llama makes ~220 kernel launches and ~50 small torch ops that compute (residual adds, the
embedding row, RoPE's angles), besides views and allocations. On 2 cores the kernels take ~11 ms of an int2 step
and the Python around them (argument checks, output allocation, the ops' dispatch) ~4.5 ms. What CUDA graphs do
for a GPU (:mod:`lowbit.runtime.cuda_graphs`), this does for the CPU: the first step of a shape runs eagerly (it builds
every op's launch plan, from Python data too), the second runs for real while a recorder notes, in order,
every TVM kernel launch (the compiled function and its argument list, reported by
:func:`lowbit.lowering.tvm.launcher.recording_launches`) and every torch op (a ``TorchDispatchMode``). Later
steps of that shape copy their inputs into the recorded step's input tensors and repeat the list: each launch
calls the compiled function on the same tensors, each op writes its result into the tensor the recording made.
The tensors a step creates are kept with the recording, so views of them stay valid and every value flows as in
the recorded step. Block tables are padded to power-of-two widths as for CUDA graphs (the lengths mask the
padding).

A recording is only replayed when the list is the whole step: nothing may decide on tensor values on the host
unseen. Steps fall back to running eagerly (for that shape, from then on) when the recorder sees a value read on
the host (``.item()``), a tensor built from Python data, or work that a launch reports as host work (the host
quantizer of a KV cache the device does not quantize, see :func:`lowbit.lowering.tvm.launcher.host_work`); steps
whose ops are not all the ``tvm`` backend's are never recorded (:func:`replayable`). Host work reported as
``transient`` (a keys-per-channel append that seals a page: its step's values chose it) only drops that step's
recording: the next step of the shape is recorded instead (after 4 dropped recordings, the shape decodes
eagerly). A decision made through :func:`lowbit.lowering.tvm.launcher.host_decision` (a low-bit KV cache's range
test before its device quantizer, whether a keys-per-channel append seals a page) is recorded as a check: a replay
decides again on its own values and, where the decision goes otherwise, stops and runs the step eagerly from the
start (what the replay wrote so far, the step writes again: a token's slots, from the same values). Value checks
that read tensors without torch ops (``tolist``, a numpy view) are not repeated: a replayed step trusts its
inputs, which the runtime makes itself.

>>> from lowbit.runtime import ops
>>> replayable(ops.resolve("auto", "cpu")), replayable(ops.resolve("torch", "cpu"))
(True, False)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves

from lowbit.lowering.tvm.launcher import recording_launches
from lowbit.lowering.tvm.tensors import to_tvm

from .cuda_graphs import padded_tables

__all__ = ["recorded_decode", "replayable", "DECODE_OPS"]

#: the ops of a decode step: replayed only when each is the ``tvm`` backend's, whose work the recorder sees whole
#: (its launches, and its host work reported by :func:`lowbit.lowering.tvm.launcher.host_work`); the torch reference
#: ops may read values on the host unseen (its attention takes the longest length with ``int``, the quantizers of
#: its KV append run in numpy), Triton's CPU interpreter computes in numpy
DECODE_OPS = ("linear", "kv_append", "decode_attention", "rms_norm", "add_rms_norm", "rope", "silu_mul")


def replayable(ops: Any) -> bool:
    """Whether decode steps with ``ops`` (a :class:`lowbit.runtime.ops.OpSet`) may be recorded and replayed."""
    backends = dict(ops.backends)
    return all(backends.get(op) == "tvm" for op in DECODE_OPS)


#: a shape whose step cannot be replayed (it decodes eagerly)
_EAGER = "eager"
#: a shape whose first step ran (eagerly, building every op's launch plan): the next one is recorded
_WARM = "warm"
#: a shape whose next step is recorded, by the recordings dropped so far for transient host work (a step that
#: sealed a page): after the last, its steps run eagerly (where most steps seal, replays would seldom hold)
_WAITING = (_WARM, "warm, 1 recording dropped", "warm, 2 recordings dropped", "warm, 3 recordings dropped")

_aten = torch.ops.aten
#: ops whose result's contents do not matter (every use writes it first): nothing to repeat
_ALLOCATIONS = {_aten.empty.memory_format, _aten.empty_strided.default, _aten.empty_like.default,
                _aten.new_empty.default, _aten.new_empty_strided.default}
#: ops that hand a tensor's value to Python, take Python data, or size their result by the values: a replay of
#: the recorded step cannot follow them
_HOST_VALUES = {_aten._local_scalar_dense.default, _aten.item.default, _aten.lift_fresh.default,
                _aten.lift_fresh_copy.default, _aten.equal.default, _aten.is_nonzero.default, _aten.nonzero.default,
                _aten.masked_select.default, _aten._unique2.default, _aten.unique_dim.default,
                _aten.unique_consecutive.default}


class _Recorder(TorchDispatchMode):
    """Records one step: ``steps`` are callables that repeat it in order; ``refused`` says why it cannot be
    replayed (None while it can)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[Callable[[], Any]] = []
        self.keep: list[Any] = []          # every tensor the step made: its views and buffers must outlive it
        self.refused: str | None = None
        self.transient = False              # refused for this step's values only: a later step may be recorded

    # -- torch ops --------------------------------------------------------------------------------------
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.refused is None:
            self._record_op(func, args, kwargs, out)
        return out

    def _record_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        self.keep.append(out)
        if func in _HOST_VALUES:
            self.refused = f"the step reads tensor values on the host ({func})"
        elif func in _ALLOCATIONS:
            return                          # an allocation: whatever reads it writes it first
        elif func._schema.is_mutable:
            self.steps.append(_call(func, args, kwargs))         # writes its arguments: the same call again
        else:
            results = _tensors(out)
            if _aliases(results, _tensors((args, kwargs))):
                return                      # a view of a kept tensor (``to``, ``reshape`` may be): nothing to repeat
            self.steps.append(_call_into(func, args, kwargs, results))

    # -- kernel launches (lowbit.lowering.tvm.launcher.recording_launches) ---------------------------------
    def launch(self, function: Any, call: list[Any]) -> None:
        if self.refused is None:
            self.keep.append(call)
            self.steps.append(_call(function, tuple(_tvm_view(a) for a in call), {}))

    def host_work(self, reason: str, transient: bool = False) -> None:
        if self.refused is None:
            self.refused, self.transient = reason, transient

    def host_decision(self, values: tuple[torch.Tensor, ...], decide: Callable[[list[float]], bool]) -> bool:
        """``decide`` on the values read now (unseen: not a refusal), and a step that decides again on the replay's
        values and stops the replay where the decision differs."""
        with _disable_current_modes():
            taken = decide([float(v) for v in values])
        self.keep.append(values)

        def check() -> None:
            if decide([float(v) for v in values]) != taken:
                raise _Diverged

        self.steps.append(check)
        return taken


class _Diverged(Exception):
    """A replay met a host decision that went otherwise than in the recorded step."""


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _aliases(results: list[torch.Tensor], inputs: list[torch.Tensor]) -> bool:
    """Whether every result shares its memory with an input: the op made views (whatever its schema says: ``to``
    and ``reshape`` return a view or a copy, depending on their arguments)."""
    memory = {t.untyped_storage().data_ptr() for t in inputs}
    return all(t.untyped_storage().data_ptr() in memory for t in results)


def _tvm_view(arg: Any) -> Any:
    """A torch tensor argument as the TVM tensor over its memory, converted once instead of on every launch."""
    return to_tvm(arg, allow_copy=False) if type(arg) is torch.Tensor else arg


def _call(fn: Any, args: tuple, kwargs: dict) -> Callable[[], Any]:
    return lambda: fn(*args, **kwargs)


def _out_variant(func: Any) -> Any:
    """The overload of ``func`` that writes its one result into an ``out`` tensor, taking the same arguments
    (``add.Tensor`` -> ``add.out``, ``index.Tensor`` -> ``index.Tensor_out``), or None."""
    signature = [(a.name, str(a.type)) for a in func._schema.arguments]
    for name in func.overloadpacket.overloads():
        overload = getattr(func.overloadpacket, name)
        outs = [a.name for a in overload._schema.arguments if a.is_out]
        if outs == ["out"] and [(a.name, str(a.type)) for a in overload._schema.arguments if not a.is_out] == signature:
            return overload                 # (pow.Tensor_Scalar -> pow.Tensor_Scalar_out, not Tensor_Tensor_out)
    return None


def _call_into(func: Any, args: tuple, kwargs: dict, results: list[torch.Tensor]) -> Callable[[], None]:
    """Repeat a functional op, its results written into the tensors the recording made: by the op's ``out``
    variant where it has one (no new tensor per replay), else computed anew and copied."""
    into = _out_variant(func) if len(results) == 1 else None
    if into is not None:
        return lambda: into(*args, **kwargs, out=results[0])

    def copied() -> None:
        for dst, src in zip(results, _tensors(func(*args, **kwargs))):
            dst.copy_(src)

    return copied


@dataclass
class _Recording:
    steps: tuple[Callable[[], Any], ...]
    inputs: tuple[torch.Tensor, ...]    # the recorded step's tokens, positions, slots, tables, lengths
    logits: torch.Tensor                # the tensor it leaves the logits in
    keep: list[Any]
    owner: Callable[..., Any]           # the recorded step: it holds the model and ops whose ids key the recording

    def replay(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        for dst, src in zip(self.inputs, inputs):
            dst.copy_(src)
        for step in self.steps:
            step()
        return self.logits.clone()


def recorded_decode(step: Callable[..., torch.Tensor], recordings: dict, key: Any, tokens: torch.Tensor,
                    positions: torch.Tensor, slots: torch.Tensor, tables: torch.Tensor,
                    lengths: torch.Tensor) -> torch.Tensor:
    """``step(tokens, positions, slots, tables, lengths)`` (the model's decode step on CPU tensors: the logits
    ``[B, vocab]``), run eagerly on the first call of this batch size and table width, recorded on the second and
    replayed after (see the module docstring); ``recordings`` keeps them (the KV cache's), under ``key`` and the
    shape. Returns a fresh logits tensor."""
    tables = padded_tables(tables)
    inputs = (tokens, positions, slots, tables, lengths)
    shape_key = ("cpu", key, int(tokens.shape[0]), int(tables.shape[1]))
    entry = recordings.get(shape_key)
    if entry is None:                       # the first step of a shape builds the ops' launch plans: not recorded
        recordings[shape_key] = _WARM
        return step(*inputs)
    if entry in _WAITING:
        static = tuple(t.clone() for t in inputs)
        recorder = _Recorder()
        with recording_launches(recorder), recorder:
            logits = step(*static)         # the real step: it writes the KV cache once
        if recorder.refused is None and isinstance(logits, torch.Tensor):
            recordings[shape_key] = _Recording(tuple(recorder.steps), static, logits, recorder.keep, step)
        elif recorder.transient and entry != _WAITING[-1]:
            recordings[shape_key] = _WAITING[_WAITING.index(entry) + 1]
        else:
            recordings[shape_key] = _EAGER
        return logits.clone()
    if entry == _EAGER:
        return step(*inputs)
    try:
        return entry.replay(inputs)
    except _Diverged:   # what ran so far wrote what the step writes again: its own slots, from the same values
        return step(*inputs)
