"""Quality measures for a quantized engine: perplexity on held-out text, greedy agreement with a reference.

>>> from lowbit.runtime import Engine
>>> ref = Engine.from_pretrained()                         # fp32 weights, f16 KV cache
>>> q4 = Engine.from_pretrained(weights="u4", group_size=64)
>>> ppl = perplexity(q4, heldout_text(), context=256)      # doctest: +SKIP
>>> agreement = greedy_agreement(ref, q4, ["Beautiful is better than"], max_new_tokens=32)
>>> agreement.teacher_forced                                # doctest: +SKIP
1.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lowbit.errors import RuntimeModelError

from .engine import Engine, default_model_dir


def heldout_text(model_dir: str | Path | None = None) -> str:
    """The held-out text shipped with a model (``heldout.txt``; default: the tiny model's)."""
    path = Path(model_dir or default_model_dir()) / "heldout.txt"
    if not path.is_file():
        raise RuntimeModelError(f"no held-out text at {path}", hint="pass the text to perplexity() yourself")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float  # nats per predicted token
    tokens: int  # predicted tokens
    windows: int


def perplexity(engine: Engine, text: str, *, context: int | None = None, batch: int = 8,
               max_tokens: int | None = None) -> PerplexityResult:
    """Perplexity of ``text`` under ``engine``: non-overlapping windows of ``context`` tokens (default: the
    model's context, at most 512), each scored from its start; every token but a window's first is predicted."""
    ids = engine.tokenizer.encode(text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    window = min(context or 512, engine.model.config.max_position_embeddings)
    if window < 2:
        raise RuntimeModelError(f"perplexity needs windows of >= 2 tokens, got context={context}")
    windows = [ids[i:i + window] for i in range(0, len(ids), window)]
    windows = [w for w in windows if len(w) >= 2]
    if not windows:
        raise RuntimeModelError(f"the text has {len(ids)} token(s); perplexity needs at least 2")
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        chunk = windows[i:i + batch]
        for seq, logits in zip(chunk, engine.token_logits(chunk)):
            target = torch.tensor(seq[1:], dtype=torch.int64)
            logp = torch.log_softmax(logits[:-1].to(torch.float64), dim=-1)
            total -= float(logp.gather(1, target[:, None]).sum())
            count += len(seq) - 1
    mean = total / count
    return PerplexityResult(math.exp(mean), mean, count, len(windows))


@dataclass(frozen=True)
class GreedyAgreement:
    teacher_forced: float  # fraction of the reference's greedy tokens the candidate also ranks first
    identical: tuple[bool, ...]  # per prompt: the candidate's own greedy output equals the reference's
    reference_texts: tuple[str, ...]
    candidate_texts: tuple[str, ...]

    @property
    def all_identical(self) -> bool:
        return all(self.identical)


def greedy_agreement(reference: Engine, candidate: Engine, prompts: Sequence[str], *,
                     max_new_tokens: int = 32) -> GreedyAgreement:
    """Compare ``candidate`` with ``reference`` (e.g. fp32) under greedy decoding.

    ``teacher_forced``: feed prompt + the reference's greedy continuation to the candidate and count the
    positions where the candidate's argmax is the reference's token (insensitive to one early divergence).
    ``identical``: whether free-running greedy generation gives exactly the same tokens.
    """
    ref = reference.generate(list(prompts), max_new_tokens=max_new_tokens)
    cand = candidate.generate(list(prompts), max_new_tokens=max_new_tokens)
    sequences = [list(o.prompt_ids) + list(o.token_ids) for o in ref.outputs]
    hits = total = 0
    for out, logits in zip(ref.outputs, candidate.token_logits(sequences)):
        n_prompt, gen = len(out.prompt_ids), list(out.token_ids)
        if not gen:
            continue
        predicted = logits[n_prompt - 1:n_prompt - 1 + len(gen)].argmax(dim=-1).tolist()
        hits += sum(int(p == g) for p, g in zip(predicted, gen))
        total += len(gen)
    identical = tuple(a.token_ids == b.token_ids for a, b in zip(ref.outputs, cand.outputs))
    return GreedyAgreement(hits / total if total else 1.0, identical, tuple(ref.texts), tuple(cand.texts))


#: Prompts the tiny model knows by heart (the Zen of Python): its greedy continuations have large margins.
TINY_PROMPTS = ("Beautiful is better than", "Errors should never", "In the face of ambiguity,",
                "The Zen of Python")


@dataclass(frozen=True)
class QualityReport:
    """One row of a quality table: a quantized engine against its fp32 reference."""

    weights: str  # e.g. "uint4 g128 zero-point"
    kv_cache: str
    weight_bytes: int
    perplexity: float
    reference_perplexity: float
    teacher_forced_agreement: float
    identical_outputs: int  # prompts whose greedy output equals the reference's
    prompts: int


def quality_report(candidate: Engine, reference: Engine, *, text: str | None = None,
                   prompts: Sequence[str] = TINY_PROMPTS, max_new_tokens: int = 32, context: int = 256,
                   max_tokens: int | None = None) -> QualityReport:
    """Perplexity on ``text`` (default: the model's ``heldout.txt``) and greedy agreement, for ``lowbit demo``.

    >>> ref = Engine.from_pretrained()
    >>> row = quality_report(Engine.from_pretrained(weights="u4"), ref, max_tokens=2048)   # doctest: +SKIP
    >>> row.perplexity, row.teacher_forced_agreement                                       # doctest: +SKIP
    (7.5, 1.0)
    """
    text = heldout_text() if text is None else text
    ppl = perplexity(candidate, text, context=context, max_tokens=max_tokens)
    ref_ppl = perplexity(reference, text, context=context, max_tokens=max_tokens)
    agree = greedy_agreement(reference, candidate, prompts, max_new_tokens=max_new_tokens)
    return QualityReport(candidate.describe_weights(), candidate.kv_format.describe(), candidate.model.weight_bytes(),
                         ppl.perplexity, ref_ppl.perplexity, agree.teacher_forced, sum(agree.identical),
                         len(prompts))
