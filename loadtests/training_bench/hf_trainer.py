"""The anchor: plain Hugging Face Trainer on the same examples, batches and settings as Tessera's trainer.

python -m loadtests.training_bench.hf_trainer BASE ROWS STEPS BATCH SEQ THREADS   (prints one JSON line)
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time

import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from services.training.entities import JobSpec
from services.training.examples import IGNORE, build_examples, end_of_turn_ids
from services.training.trainer import batch_indices, read_rows


class Ordered(Dataset):
    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class StepTimer(TrainerCallback):
    """When each optimizer step ended (the first step is warm-up; the wall time after it is timed)."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())


def main() -> None:
    base, rows_path, steps, batch, seq, threads = sys.argv[1:7]
    steps, batch, seq, threads = int(steps), int(batch), int(seq), int(threads)
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    spec = JobSpec(base_model="x", steps=steps, batch_size=batch, sequence_length=seq, seed=3)
    examples = build_examples(tokenizer, read_rows(rows_path), "CHAT", seq, end_of_turn_ids(tokenizer)).examples
    # The same batches, in the same order, as Tessera's trainer sees.
    order = [i for step in range(steps) for i in batch_indices(spec, len(examples), step)]
    items = [{"input_ids": examples[i].input_ids, "labels": examples[i].labels} for i in order]
    tokens = [
        sum(len(items[j]["input_ids"]) for j in range(s * batch, min(len(items), (s + 1) * batch)))
        for s in range(steps)
    ]

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        pad = tokenizer.pad_token_id or 0
        ids = torch.tensor([f["input_ids"] + [pad] * (width - len(f["input_ids"])) for f in features])
        labels = torch.tensor([f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features])
        mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    class SequentialTrainer(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-4,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            dataloader_num_workers=0,
            use_cpu=True,
            seed=3,
            disable_tqdm=True,
        )
        SequentialTrainer(
            model=model, args=arguments, train_dataset=Ordered(items), data_collator=collate, callbacks=[timer]
        ).train()
    print(
        json.dumps(
            {
                "tokens_per_s": sum(tokens[1 : len(timer.ends)]) / max(timer.ends[-1] - timer.ends[0], 1e-9),
                "tokens_per_cpu_s": sum(tokens[1 : len(timer.cpu)]) / max(timer.cpu[-1] - timer.cpu[0], 1e-9),
                "steps": len(timer.ends),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
