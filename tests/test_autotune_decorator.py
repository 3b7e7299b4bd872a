"""@lowbit.autotune over @lowbit.jit: times the configurations once per key (skipping broken ones), runs the
winner, persists the choice and reuses it without timing again, in this process and in another one."""
from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import lowbit  # noqa: E402
autotune_module = importlib.import_module("lowbit.autotune")  # the module (lowbit.autotune is the decorator)
from lowbit.errors import CompileError  # noqa: E402

KERNELS = '''
from __future__ import annotations
import lowbit
from lowbit.dsl import Out

@lowbit.jit
def add(x: f32[N], y: f32[N], out: Out[f32[N]], BLOCK: const = 64):
    grid(cdiv(N, BLOCK))
    o = block(0) * BLOCK
    store(out, load(x, [o], [BLOCK]) + load(y, [o], [BLOCK]), [o])

@lowbit.jit
def accumulate(x: f32[N], acc: Out[f32[N]], BLOCK: const = 64):
    grid(cdiv(N, BLOCK))
    o = block(0) * BLOCK
    store(acc, load(acc, [o], [BLOCK]) + load(x, [o], [BLOCK]), [o])
'''

# On the reference interpreter each program costs ~50 us or more, so 128 programs (BLOCK=16, N=2048) take
# tens of times longer than 2 (BLOCK=1024): the choice is unambiguous on a loaded machine. BLOCK=0 cannot
# compile (cdiv by zero) and must be skipped.
CONFIGS = [{"BLOCK": 16}, {"BLOCK": 0}, {"BLOCK": 1024}]


def _kernels(tmp_path):
    path = tmp_path / "at_kernels.py"
    path.write_text(KERNELS)
    spec = importlib.util.spec_from_file_location("at_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def kernels(tmp_path):
    return _kernels(tmp_path)


def _tuned(fn, root, configs=CONFIGS, key=("N",)):
    return lowbit.autotune(configs=configs, key=list(key), repeats=3, warmup=1, progress=False, root=root)(fn)


def test_picks_the_fastest_working_config_and_persists_it(kernels, tmp_path, caplog):
    add = _tuned(kernels.add, tmp_path / "tune")
    x, y, out = torch.randn(2048), torch.randn(2048), torch.zeros(2048)
    add(x, y, out)
    assert torch.equal(out, x + y)
    (choice,) = add.choices.values()
    assert choice.config == {"BLOCK": 1024} and choice.source == "measured"
    assert "candidate {'BLOCK': 0} failed (skipped)" in caplog.text and "cdiv by 0" in caplog.text
    (record_file,) = (tmp_path / "tune").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["choice"] == {"BLOCK": 1024} and record["key"]["key"] == {"N": 2048}
    assert record["device"].startswith("cpu:") and record_file.name.startswith("at_kernels.add-")
    timed = {m["config"]["BLOCK"]: m["median_s"] for m in record["measurements"]}
    assert timed[0] is None and timed[1024] < timed[16]


def test_reuses_the_choice_without_timing_again(kernels, tmp_path, monkeypatch):
    root = tmp_path / "tune"
    add = _tuned(kernels.add, root)
    x, y, out = torch.randn(2048), torch.randn(2048), torch.zeros(2048)
    add(x, y, out)

    def no_timing(*args, **kwargs):
        raise AssertionError("a persisted choice was timed again")

    monkeypatch.setattr(autotune_module, "time_callable", no_timing)
    out.zero_()
    add(x, y, out)                                          # remembered in this process
    assert torch.equal(out, x + y)
    fresh = _tuned(kernels.add, root)                        # a new decorator: reads the persisted record
    out.zero_()
    fresh(x, y, out)
    assert torch.equal(out, x + y)
    (choice,) = fresh.choices.values()
    assert choice == autotune_module.Choice({"BLOCK": 1024}, "persisted")
    with pytest.raises(CompileError, match="every candidate failed.*a persisted choice was timed again"):
        fresh(torch.randn(100), torch.randn(100), torch.zeros(100))     # a new key (N=100) is tuned afresh


def test_the_choice_is_reused_by_another_process(kernels, tmp_path):
    root = tmp_path / "tune"
    x, y = torch.randn(2048), torch.randn(2048)
    _tuned(kernels.add, root)(x, y, torch.zeros(2048))
    script = textwrap.dedent(f"""
        import importlib, importlib.util, torch, lowbit
        at = importlib.import_module("lowbit.autotune")
        def no_timing(*a, **k): raise AssertionError("timed again")
        at.time_callable = no_timing
        spec = importlib.util.spec_from_file_location("at_kernels", {str(tmp_path / 'at_kernels.py')!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        add = lowbit.autotune(configs={CONFIGS!r}, key=["N"], progress=False, root={str(root)!r})(mod.add)
        x, y, out = torch.arange(2048.0), torch.ones(2048), torch.zeros(2048)
        add(x, y, out)
        assert torch.equal(out, x + 1)
        print([(c.config, c.source) for c in add.choices.values()])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[({'BLOCK': 1024}, 'persisted')]"


def test_timing_runs_never_touch_the_callers_outputs(kernels, tmp_path):
    """acc += x: timing runs accumulate into scratch copies; the caller's acc sees exactly one run."""
    acc_kernel = _tuned(kernels.accumulate, tmp_path / "tune", configs=[{"BLOCK": 16}, {"BLOCK": 512}])
    x = torch.randn(1000)
    acc = torch.full((1000,), 2.0)
    acc_kernel(x, acc)
    assert torch.equal(acc, x + 2.0)


def test_key_names_arguments_symbols_or_constants(kernels, tmp_path):
    by_shape = _tuned(kernels.add, tmp_path / "a", configs=[{"BLOCK": 256}], key=["x"])
    by_shape(np.ones(300, np.float32), np.ones(300, np.float32), np.zeros(300, np.float32))
    ((values, backend, device, _),) = by_shape.choices
    assert values == (("x", (300,)),) and backend == "interpret" and device == "cpu"
    with pytest.raises(CompileError, match=r"(?s)key 'M' is not an argument, shape symbol or constant.*"
                                           r"shape symbols: N"):
        _tuned(kernels.add, tmp_path / "b", key=["M"])(torch.zeros(4), torch.zeros(4), torch.zeros(4))


def test_mistakes_are_clear_errors(kernels, tmp_path):
    add = _tuned(kernels.add, tmp_path / "tune")
    x = torch.zeros(8)
    with pytest.raises(CompileError, match="BLOCK are tuned; do not pass them"):
        add(x, x, x, BLOCK=8)
    with pytest.raises(CompileError, match=r"takes 3 tensor/scalar arguments \(x, y, out\), got 2"):
        add(x, x)
    with pytest.raises(CompileError, match="TILE are not constants of the kernel"):
        _tuned(kernels.add, tmp_path / "t", configs=[{"BLOCK": 8}, {"TILE": 8}])(x, x, x)
    with pytest.raises(CompileError, match="at least one configuration"):
        lowbit.autotune(configs=[])
    with pytest.raises(CompileError, match="non-empty dicts"):
        lowbit.autotune(configs=[{}])
    with pytest.raises(CompileError, match="every candidate failed"):
        _tuned(kernels.add, tmp_path / "z", configs=[{"BLOCK": 0}])(x, x, x)


def test_lowbit_autotune_is_the_decorator_even_after_importing_the_submodule():
    import lowbit.autotune  # noqa: F401  (must not rebind lowbit.autotune to the module)

    assert lowbit.autotune is autotune_module.autotune
    assert isinstance(lowbit.autotune(configs=[{"B": 1}]), type(lambda: None))
