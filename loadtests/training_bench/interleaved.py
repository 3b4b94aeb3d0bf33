"""Tessera's training step against the one Trainer runs, in one process, step by step on the same batches.

    python -m loadtests.training_bench.interleaved [--steps 9] [--threads 2]

Two copies of the tiny Llama, each with its own fused AdamW, take the same batches in the same
order; the steps alternate (which goes first alternates too) and each step's CPU time is
measured. Tessera's step is `trainer.loss_sum` (summed token cross-entropy, divided by the
batch's trained tokens); the other is the model's own loss with `num_items_in_batch`, which is
what `Trainer.compute_loss` calls. On a host shared with other work this separates the cost of
the step itself from the CPU each process happens to get, which wall-clock runs in separate
processes cannot.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.fixtures import capitals
from services.fixtures.tiny_llama import build_tiny_llama
from services.training.entities import JobSpec
from services.training.examples import IGNORE, build_examples, end_of_turn_ids
from services.training.trainer import batch_indices, collate, loss_sum, read_rows, trained_in


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = build_tiny_llama()
    rows = Path(tempfile.mkdtemp(prefix="training-interleaved-")) / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in capitals.filler_text_rows(args.rows)))
    tokenizer = AutoTokenizer.from_pretrained(base)
    examples = build_examples(tokenizer, read_rows(str(rows)), "CHAT", args.seq, end_of_turn_ids(tokenizer)).examples
    spec = JobSpec(base_model="x", steps=args.steps, batch_size=args.batch, sequence_length=args.seq, seed=3)
    first = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    models = {"tessera": first, "trainer": copy.deepcopy(first)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for k, m in models.items()}
    pad = tokenizer.pad_token_id or 0

    def step(kind: str, index: int) -> None:
        batch = [examples[i] for i in batch_indices(spec, len(examples), index)]
        model, optimizer = models[kind], optimizers[kind]
        model.train()
        if kind == "tessera":
            total, _ = loss_sum(model, batch, pad, "cpu")
            (total / max(1, trained_in(batch))).backward()
        else:
            ids, labels, mask = collate(batch, pad, "cpu")
            items = torch.tensor(int((labels[:, 1:] != IGNORE).sum()))
            model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=items).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    cpu: dict[str, list[float]] = {"tessera": [], "trainer": []}
    for index in range(args.steps):
        for kind in ("tessera", "trainer") if index % 2 else ("trainer", "tessera"):
            started = time.process_time()
            step(kind, index)
            if index:  # the first step is warm-up
                cpu[kind].append(time.process_time() - started)
        if index:
            print(f"step {index}: " + ", ".join(f"{k} {v[-1]:.2f} CPU-s" for k, v in cpu.items()), flush=True)
    medians = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"median CPU-s per step: Tessera {medians['tessera']:.3f}, Trainer's {medians['trainer']:.3f};"
        f" Tessera's speed x Trainer's = {medians['trainer'] / medians['tessera']:.2f}"
    )


if __name__ == "__main__":
    main()
