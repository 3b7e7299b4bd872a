"""``lowbit demo``'s model part (the README's main job), small: every configuration gets a row, a generation and
a tokens/s measured after an untimed warm-up generation."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from lowbit.cli import main  # noqa: E402
from lowbit.commands import demo  # noqa: E402


def test_quick_model_table_times_a_warm_generation(capsys, monkeypatch):
    from lowbit.runtime import Engine

    calls = []
    real = Engine.generate

    def counting(self, prompts, max_new_tokens, **kwargs):
        calls.append(max_new_tokens)
        return real(self, prompts, max_new_tokens=max_new_tokens, **kwargs)

    monkeypatch.setattr(Engine, "generate", counting)
    assert main(["demo", "--quick", "--skip-formats", "--backend", "torch", "--heldout-tokens", "64",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.endswith("torch")]
    assert len(rows) == 1 + len(demo.QUICK_CONFIGS), out                 # the fp32 reference and each config
    assert all(float(line.split()[-2]) > 0 for line in rows), out      # tokens/s
    generations = [line for line in out.splitlines() if line.startswith("  [")]
    assert len(generations) == 1 + len(demo.QUICK_CONFIGS), out
    assert all("'Beautiful is better than" in line for line in generations), out
    # per engine: a warm-up generation of 2 tokens, then the timed one
    assert calls.count(2) == 1 + len(demo.QUICK_CONFIGS) and calls.count(4) >= 1 + len(demo.QUICK_CONFIGS)
