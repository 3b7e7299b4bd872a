#!/usr/bin/env python
"""Train lowbit's embedded default model: a tiny Llama that writes recognisable text.

The model is a ``transformers.LlamaForCausalLM`` built from a config (4 layers, hidden 128, grouped-query
attention with 4 query / 2 key-value heads, tied embeddings, ~0.8M parameters). It reads UTF-8 bytes:
token ids 0-255 are the bytes and 256 is end-of-text, so it needs no tokenizer file and runs with
lowbit's byte-level tokenizer (``lowbit.runtime.tokenizer.ByteTokenizer``) and no extra package.

The training text ships with Python itself, so nothing is downloaded: the docstrings of 50 standard-library
modules (~290 KB) and the Zen of Python (the ``this`` module), repeated 100 times so that the model knows
it by heart: its greedy continuations of Zen lines have large logit margins and survive 8-, 4- and
3-bit weights, while the docstrings give it a useful held-out perplexity (~6.5 per byte). The docstrings of a few *other* modules (fractions,
statistics, decimal, sched, graphlib) are the held-out text for perplexity; they are saved next to the
checkpoint as ``heldout.txt`` because docstrings change between Python versions.

It trains in about five minutes on one idle CPU core (longer on a busy machine) and writes, under ``lowbit/models/tiny-llama/``:
``config.json``, ``model.safetensors`` (fp16), ``heldout.txt`` and ``train_info.json``.

    python scripts/train_tiny.py                 # ~5 minutes, 1 thread
    python scripts/train_tiny.py --steps 200 --out /tmp/tiny   # a quick try

The run is deterministic for a given Python/torch build (seeded; one thread).
"""
from __future__ import annotations

import argparse
import codecs
import hashlib
import importlib
import inspect
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN_MODULES = [
    "textwrap", "string", "json", "functools", "itertools", "collections", "heapq", "bisect", "random",
    "pathlib", "shutil", "argparse", "contextlib", "dataclasses", "enum", "typing", "os", "abc", "copy",
    "pprint", "operator", "glob", "fnmatch", "tempfile", "csv", "difflib", "calendar", "datetime", "base64",
    "hashlib", "zipfile", "tarfile", "logging", "unittest", "subprocess", "threading", "queue", "socket",
    "email", "http.client", "urllib.parse", "inspect", "ast", "dis", "pickle", "weakref", "math", "time",
    "io", "struct",
]
HELDOUT_MODULES = ["fractions", "statistics", "decimal", "sched", "graphlib"]
ZEN_REPEATS = 100
EOS_ID = 256  # token ids 0-255 are bytes
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "lowbit" / "models" / "tiny-llama"


def zen_of_python() -> str:
    """The text of ``import this``, without printing it."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # `import this` prints the Zen on first import
        import this  # noqa: F401
    return codecs.decode(sys.modules["this"].s, "rot13")


def module_docs(names: list[str]) -> list[str]:
    """Docstrings of the modules and of their public top-level objects, in a fixed order."""
    out: list[str] = []
    for name in names:
        module = importlib.import_module(name)
        doc = inspect.getdoc(module)
        if doc:
            out.append(doc)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 40:
                out.append(f"{attr}: {doc}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    zen = zen_of_python()
    train_docs = [zen] * ZEN_REPEATS + module_docs(TRAIN_MODULES)
    heldout_docs = module_docs(HELDOUT_MODULES)

    # One token stream "doc <eot> doc <eot> ..." with the documents in a seeded random order.
    order = torch.randperm(len(train_docs), generator=torch.Generator().manual_seed(args.seed)).tolist()
    stream = torch.tensor([t for i in order for t in (*train_docs[i].encode("utf-8"), EOS_ID)], dtype=torch.long)
    print(f"corpus: {len(train_docs)} documents, {stream.numel()} tokens (bytes)")

    config = LlamaConfig(
        vocab_size=EOS_ID + 1, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=EOS_ID, pad_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    gen = torch.Generator().manual_seed(args.seed + 1)
    model.train()
    t0 = time.time()
    losses: list[float] = []
    for step in range(args.steps):
        starts = torch.randint(0, stream.numel() - args.seq - 1, (args.batch,), generator=gen)
        batch = torch.stack([stream[s:s + args.seq + 1] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone()).loss
        # HF shifts labels internally, so labels == inputs trains next-token prediction.
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {sum(losses[-100:]) / len(losses[-100:]):.3f}  "
                  f"{time.time() - t0:6.1f}s", flush=True)

    model.eval()
    heldout_text = "\n\n".join(heldout_docs)
    with torch.no_grad():
        ids = torch.tensor([list(heldout_text.encode("utf-8"))[: 4 * 256]])
        chunks = ids.view(-1, 256) if ids.shape[1] == 4 * 256 else ids[:, :256]
        heldout_loss = model(input_ids=chunks, labels=chunks).loss.item()
    print(f"held-out loss {heldout_loss:.3f} (ppl {math.exp(heldout_loss):.1f})")

    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16)
    model.config.dtype = "float16"
    model.save_pretrained(args.out, safe_serialization=True)
    gen_cfg = args.out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    (args.out / "model.safetensors").chmod(0o644)  # save_pretrained writes it 0600 (a temp file)
    (args.out / "heldout.txt").write_text(heldout_text + "\n", encoding="utf-8")
    info = {
        "script": "scripts/train_tiny.py", "steps": args.steps, "batch": args.batch, "seq": args.seq,
        "lr": args.lr, "seed": args.seed, "threads": args.threads, "parameters": n_params,
        "train_tokens": int(stream.numel()), "train_modules": TRAIN_MODULES, "zen_repeats": ZEN_REPEATS,
        "heldout_modules": HELDOUT_MODULES, "final_train_loss": sum(losses[-100:]) / len(losses[-100:]),
        "heldout_loss": heldout_loss, "seconds": round(time.time() - t0, 1),
        "python": sys.version.split()[0], "torch": torch.__version__,
        "corpus_sha256": hashlib.sha256("\x00".join(train_docs).encode()).hexdigest(),
    }
    (args.out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
