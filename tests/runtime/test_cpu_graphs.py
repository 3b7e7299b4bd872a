"""Decode steps replayed from a recording (lowbit.runtime.cpu_graphs) against the same steps run eagerly."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from lowbit.lowering.tvm.launcher import host_decision, host_work
from lowbit.runtime import Engine, default_model_dir
from lowbit.runtime import ops as ops_registry
from lowbit.runtime.cpu_graphs import recorded_decode


def _decode_run(engine: Engine, graphs: bool, prompts: list[list[int]], steps: int):
    """Greedy decode of ``prompts`` (one sequence each) for ``steps`` steps: every step's logits, and the cache."""
    model, ops = engine.model, engine.ops
    cache = engine.new_cache(32)
    seqs = list(range(len(prompts)))
    last = [int(logits.argmax()) for logits in model.prefill(ops, cache, seqs, prompts)]
    out = []
    for _ in range(steps):
        logits = model.decode(ops, cache, seqs, last, cpu_graphs=graphs)
        out.append(logits)
        last = [int(row.argmax()) for row in logits]
    return out, cache


@pytest.mark.parametrize("kv", ["f16", "bf16"])
def test_replayed_steps_equal_eager_steps_bit_for_bit(kv):
    """Two sequences of different lengths, 30 steps: across page ends (pages of 4 tokens) and table widths
    2 -> 4 -> 8 -> 16 pages, so recordings are made at several widths and replayed within each."""
    engine = Engine.from_pretrained(default_model_dir(), weights="u4", group_size=32, kv=kv, page_size=4,
                                    activations="bfloat16")
    prompts = [[5, 9, 2], [7, 1, 8, 3, 3, 6]]
    with torch.inference_mode():
        eager, eager_cache = _decode_run(engine, False, prompts, 30)
        replayed, cache = _decode_run(engine, True, prompts, 30)
    assert not eager_cache.decode_graphs
    recordings = {key[-1]: entry for key, entry in cache.decode_graphs.items() if key[0] == "cpu"}
    assert sorted(recordings) == [2, 4, 8, 16] and all(not isinstance(e, str) for e in recordings.values())
    for step, (a, b) in enumerate(zip(eager, replayed)):
        assert torch.equal(a, b), f"step {step}: replayed logits differ from the eager step's"
    for a, b in zip(eager_cache.layers, cache.layers):          # the KV cache written the same, once per token
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)


def _layer_tensors(layer) -> dict:
    return {name: getattr(layer, name) for name in ("k", "v", "k_scales", "v_scales", "k_zeros", "v_zeros",
                                                    "k_stage") if getattr(layer, name) is not None}


@pytest.mark.parametrize("kv, grouping, replayed", [("u4", "token", True), ("i4", "token", True),
                                                     ("i4", "channel", True), ("u3", "channel", True),
                                                     ("f8e4m3fn", "token", True), ("f4e2m1", "channel", True),
                                                     ("f3e2m0", "token", False)])
def test_low_bit_kv_caches_replay_where_the_device_quantizes(kv, grouping, replayed):
    """Integer and float codes per token are quantized by a kernel, after a range test the replay repeats:
    replayed, bit-identical. Keys per channel: the steps that only stage keys are replayed (a test the replay
    repeats), the ones that seal a page (every 4th token of a sequence here) run eagerly. Float codes without a
    mantissa (the host's quantizer) stay eager."""
    engine = Engine.from_pretrained(default_model_dir(), weights="u4", group_size=32, kv=kv, page_size=4,
                                    kv_key_grouping=grouping)
    prompts = [[5, 9, 2], [4, 4]]
    with torch.inference_mode():
        eager, eager_cache = _decode_run(engine, False, prompts, 12)
        got, cache = _decode_run(engine, True, prompts, 12)
    states = list(cache.decode_graphs.values())          # "warm": a shape's first step, then recorded or "eager"
    assert any(not isinstance(state, str) for state in states) == replayed
    assert replayed or "eager" in states
    for step, (a, b) in enumerate(zip(eager, got)):
        assert torch.equal(a, b), f"step {step}: replayed logits differ from the eager step's"
    for a, b in zip(eager_cache.layers, cache.layers):
        expected, written = _layer_tensors(a), _layer_tensors(b)
        assert expected.keys() == written.keys()
        for name in expected:
            assert torch.equal(expected[name], written[name]), name


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_ops_of_a_backend_the_recorder_cannot_see_whole_are_never_recorded(backend):
    """Triton's CPU interpreter computes in numpy, the torch reference ops may read values on the host (its KV
    append quantizes in numpy): a step with one of their ops stays eager, with the same logits."""
    engine = Engine.from_pretrained(default_model_dir(), weights="u4", group_size=32, kv="u4", page_size=4)
    op = "rms_norm" if backend == "triton" else "kv_append"
    backends = tuple((name, backend if name == op else b) for name, b in engine.ops.backends)
    engine.ops = dataclasses.replace(engine.ops, **{op: ops_registry.registered(op)[(op, backend)]},
                                     backends=backends)
    with torch.inference_mode():
        eager, _ = _decode_run(engine, False, [[5, 9, 2]], 6)
        got, cache = _decode_run(engine, True, [[5, 9, 2]], 6)
    assert not cache.decode_graphs
    assert all(torch.equal(a, b) for a, b in zip(eager, got))


def _inputs(token: int, length: int):
    return (torch.tensor([token]), torch.tensor([length - 1]), torch.tensor([length - 1], dtype=torch.int32),
            torch.tensor([[0, 1, 2]], dtype=torch.int32), torch.tensor([length], dtype=torch.int32))


def test_a_recording_repeats_functional_in_place_and_view_ops_on_new_inputs():
    """A step of plain torch ops (no kernels): replays compute what the step computes on each step's inputs."""
    state = torch.zeros(4)

    def step(tokens, positions, slots, tables, lengths):
        x = (tokens.to(torch.float32) * 2 + positions)[:, None].expand(1, 4).clone()      # functional, views
        x[:, 1:] += tables[:, :3].to(torch.float32)                                         # in place on a view
        state.add_(x[0])                                                                    # state across steps
        return torch.cat([x, state[None]], dim=1) * lengths.to(torch.float32)

    expected_state = torch.zeros(4)

    def expected(tokens, positions, slots, tables, lengths):
        x = (tokens.to(torch.float32) * 2 + positions)[:, None].expand(1, 4).clone()
        x[:, 1:] += tables[:, :3].to(torch.float32)
        expected_state.add_(x[0])
        return torch.cat([x, expected_state[None]], dim=1) * lengths.to(torch.float32)

    recordings: dict = {}
    for t in range(6):
        args = _inputs(3 * t + 1, t + 2)
        got = recorded_decode(step, recordings, "k", *args)
        assert torch.equal(got, expected(*args)), t
    entry = recordings[("cpu", "k", 1, 4)]          # the table of 3 pages is padded to 4
    assert not isinstance(entry, str) and entry.steps


@pytest.mark.parametrize("inference", [False, True])
@pytest.mark.parametrize("reads", ["item", "host_work"])
def test_a_step_that_reads_values_on_the_host_is_not_replayed(reads, inference):
    def step(tokens, positions, slots, tables, lengths):
        if reads == "item":
            scale = 2.0 if int(tokens[0]) % 2 else 3.0        # a decision on a value: a replay would freeze it
        else:
            host_work("a test's host computation")
            scale = 1.0
        return tokens.to(torch.float32)[None] * scale

    recordings: dict = {}
    for t in range(4):
        with torch.inference_mode(inference):       # (inference mode dispatches item(), not its parts)
            got = recorded_decode(step, recordings, "k", *_inputs(t, 2))
        assert float(got[0, 0]) == t * (1.0 if reads == "host_work" else 2.0 if t % 2 else 3.0)
    assert recordings == {("cpu", "k", 1, 4): "eager"}


def test_a_step_whose_host_work_is_transient_leaves_a_later_step_to_be_recorded():
    """A step that takes a host path for its values only (as an append that seals a page): decided with
    ``host_decision``, the path's work reported ``transient``. Recording steps that take it are not kept (the
    shape stays unrecorded), the first one that does not is recorded; replays that meet the host path run
    eagerly."""
    calls = []

    def step(tokens, positions, slots, tables, lengths):
        calls.append(tokens.tolist()[0])            # (read without a torch op: the recorder does not see it)
        if host_decision([tokens.amax()], lambda v: v[0] % 3 != 0):
            return tokens.to(torch.float32)[None] + 1
        host_work("a test's occasional host computation", transient=True)
        return -tokens.to(torch.float32)[None]

    recordings: dict = {}
    for t in (0, 3, 6, 1, 4, 3, 5):
        assert float(recorded_decode(step, recordings, "k", *_inputs(t, 2))[0, 0]) == (t + 1 if t % 3 else -t)
    assert not isinstance(recordings[("cpu", "k", 1, 4)], str)
    assert calls == [0, 3, 6, 1, 3]     # eager, recorded but not kept (3, 6), kept (1), replayed but for the 3


def test_a_shape_whose_recordings_keep_meeting_transient_host_work_decodes_eagerly():
    """Four recordings dropped for transient host work: the shape's steps run eagerly from then on (unrecorded)."""
    def step(tokens, positions, slots, tables, lengths):
        host_work("a test's host computation on every step", transient=True)
        return tokens.to(torch.float32)[None]

    recordings: dict = {}
    states = []
    for t in range(7):
        assert float(recorded_decode(step, recordings, "k", *_inputs(t, 2))[0, 0]) == t
        states.append(recordings[("cpu", "k", 1, 4)])
    assert states[0] == "warm" and states[4:] == ["eager"] * 3
    assert all(state.startswith("warm") for state in states[:4])


def test_a_replay_whose_host_decision_goes_otherwise_runs_the_step_anew():
    """A decision recorded one way (tokens below 5: double) and met the other way in a replay: that step runs
    eagerly from the start (its writes again, the same), later ones replay again."""
    state = torch.zeros(1)

    def step(tokens, positions, slots, tables, lengths):
        state.copy_(tokens.to(torch.float32))                   # a write before the decision, repeated on rerun
        small = host_decision([tokens.to(torch.float32).amax()], lambda v: v[0] < 5)
        return tokens.to(torch.float32)[None] * (2.0 if small else 3.0)

    recordings: dict = {}
    for t in (1, 2, 3, 7, 4, 9, 0):
        got = recorded_decode(step, recordings, "k", *_inputs(t, 2))
        assert float(got[0, 0]) == t * (2.0 if t < 5 else 3.0) and float(state[0]) == t
    assert not isinstance(recordings[("cpu", "k", 1, 4)], str)
