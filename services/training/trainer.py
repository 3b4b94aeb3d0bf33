"""One training process: `python -m services.training.trainer PLAN.json` (or under torchrun for DDP).

The worker writes the plan (spec, base model folder, dataset files, where
checkpoints go, which one to resume from) and reads this process's stdout: one
JSON object per line (`started`, `progress`, `checkpoint`, `done`), from rank 0.

Resuming is exact: a checkpoint holds the trainable weights, the optimizer, the
scheduler, every RNG state and the data position (the step; each epoch's order
is a permutation seeded by seed and epoch), so a resumed job continues the same
loss curve and ends with the same weights as an uninterrupted one (CPU,
deterministic algorithms, the same thread count).
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.training.dataset_rows import split_lines
from services.training.entities import JobSpec
from services.training.examples import IGNORE, Example, build_examples, end_of_turn_ids

# Files of a base model folder the output keeps as they are (the tokenizer and its templates).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
)
# Peak bf16 FLOP/s of the GPUs MFU is computed against (by name fragment); CPU jobs report no MFU.
_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


@dataclass
class Plan:
    spec: JobSpec
    base_dir: str
    train_path: str
    eval_path: str
    output_dir: str
    checkpoint_dir: str
    resume_from: str = ""
    threads: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    deterministic: bool = True

    @staticmethod
    def load(path: str) -> Plan:
        data = json.loads(Path(path).read_text())
        data["spec"] = JobSpec.from_json(data["spec"])
        return Plan(**data)


class Emitter:
    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __call__(self, event: str, **body) -> None:
        if self.rank == 0:
            sys.stdout.write(json.dumps({"event": event, **body}) + "\n")
            sys.stdout.flush()


def read_rows(path: str) -> list[dict]:
    if not path:
        return []
    with open(path, "rb") as f:
        return [json.loads(line) for line in split_lines(iter(lambda: f.read(1 << 20), b"")) if line.strip()]


def total_steps(spec: JobSpec, examples: list[Example]) -> int:
    per_epoch = max(1, math.ceil(len(examples) / spec.batch_size))
    if spec.steps:
        return spec.steps
    if spec.tokens:
        mean = sum(len(e.input_ids) for e in examples) / max(1, len(examples))
        return max(1, math.ceil(spec.tokens / max(1.0, mean * spec.batch_size)))
    return per_epoch * max(1, spec.epochs or 1)


def batch_indices(spec: JobSpec, n: int, step: int) -> list[int]:
    """The examples of global step `step`: each epoch is a permutation seeded by (seed, epoch)."""
    import torch

    per_epoch = max(1, math.ceil(n / spec.batch_size))
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(spec.seed * 1_000_003 + epoch)).tolist()
    return order[k * spec.batch_size : (k + 1) * spec.batch_size]


def lr_lambda(spec: JobSpec, steps: int):
    def factor(step: int) -> float:
        if spec.warmup_steps and step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        if spec.lr_schedule == "constant":
            return 1.0
        progress = (step - spec.warmup_steps) / max(1, steps - spec.warmup_steps)
        if spec.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


def collate(examples: list[Example], pad_id: int, device):
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def loss_sum(model, examples: list[Example], pad_id: int, device):
    """Summed token cross-entropy over the labeled tokens (labels shifted, logits not copied), and their count."""
    import torch

    ids, labels, mask = collate(examples, pad_id, device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    target = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, int((target != IGNORE).sum())


def trained_in(examples: list[Example]) -> int:
    return sum(sum(1 for label in e.labels[1:] if label != IGNORE) for e in examples)


def build_model(plan: Plan, device):
    import torch
    from transformers import AutoModelForCausalLM

    spec = plan.spec
    model = AutoModelForCausalLM.from_pretrained(plan.base_dir, dtype=torch.float32)
    if spec.method == "LORA":
        from peft import LoraConfig, get_peft_model

        targets = list(spec.lora_target_modules) or [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        config = LoraConfig(
            r=spec.lora_rank or 16,
            lora_alpha=spec.lora_alpha or 2 * (spec.lora_rank or 16),
            lora_dropout=spec.lora_dropout,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    return model.to(device)


def save_checkpoint(plan: Plan, model, optimizer, scheduler, step: int, history: list[float]) -> Path:
    import torch

    folder = Path(plan.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    trainable = {name: p.detach().cpu().clone() for name, p in _unwrapped(model).named_parameters() if p.requires_grad}
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {
        "step": step,
        "trainable": trainable,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "data": {"step": step, "seed": plan.spec.seed, "batch_size": plan.spec.batch_size},
        "history": history,
    }
    path = folder / f"step-{step:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in sorted(folder.glob("step-*.pt"))[: -max(1, plan.keep_checkpoints)]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str, model, optimizer, scheduler) -> tuple[int, list[float]]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    missing = _unwrapped(model).load_state_dict(state["trainable"], strict=False)
    if missing.unexpected_keys:
        raise RuntimeError(f"checkpoint {path} does not fit the model: {missing.unexpected_keys[:3]}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), list(state["history"])


def _unwrapped(model):
    return model.module if hasattr(model, "module") and not hasattr(model, "peft_config") else model


def save_output(plan: Plan, model) -> None:
    """A plain Hugging Face folder vLLM loads as is: LoRA merged into the weights, the base's dtype and tokenizer."""
    import torch

    inner = _unwrapped(model)
    if plan.spec.method == "LORA":
        inner = inner.merge_and_unload()
    config = json.loads((Path(plan.base_dir) / "config.json").read_text())
    dtype = getattr(torch, str(config.get("torch_dtype") or config.get("dtype") or "float32"), torch.float32)
    out = Path(plan.output_dir)
    if out.exists():
        shutil.rmtree(out)
    inner.to(dtype).save_pretrained(out, safe_serialization=True)
    for name in _TOKENIZER_FILES:
        source = Path(plan.base_dir) / name
        if source.is_file():
            shutil.copyfile(source, out / name)


def run(plan: Plan) -> int:
    launched = time.perf_counter()
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    emit = Emitter(rank)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    if plan.deterministic:
        torch.use_deterministic_algorithms(True)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if torch.cuda.is_available() else "cpu"
    if world > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    spec = plan.spec
    random.seed(spec.seed)
    torch.manual_seed(spec.seed)

    tokenizer = AutoTokenizer.from_pretrained(plan.base_dir)
    generation = Path(plan.base_dir) / "generation_config.json"
    eos = json.loads(generation.read_text()).get("eos_token_id") if generation.exists() else None
    eot = end_of_turn_ids(tokenizer, eos if isinstance(eos, list) else [eos] if eos is not None else [])
    built = build_examples(tokenizer, read_rows(plan.train_path), spec.task, spec.sequence_length, eot)
    if built.problems:
        emit("failed", error="; ".join(built.problems[:5]))
        return 2
    evaluation = build_examples(tokenizer, read_rows(plan.eval_path), spec.task, spec.sequence_length, eot).examples
    examples = built.examples
    steps = total_steps(spec, examples)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    model = build_model(plan, device)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused AdamW (CPU and CUDA): one kernel per step instead of a loop over parameters, as Trainer's default.
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(spec, steps))
    step, history = 0, []
    if plan.resume_from:
        step, history = load_checkpoint(plan.resume_from, model, optimizer, scheduler)
    n_params = sum(p.numel() for p in _unwrapped(model).parameters())
    n_trainable = sum(p.numel() for p in params)
    emit(
        "started",
        step=step,
        total_steps=steps,
        parameters=n_params,
        trainable=n_trainable,
        resumed=bool(step),
        setup_s=time.perf_counter() - launched,
    )

    stop = {"cancel": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(cancel=True))
    peak = _peak_flops(device)
    model.train()
    while step < steps and not stop["cancel"]:
        started = time.perf_counter()
        batch = [examples[i] for i in batch_indices(spec, len(examples), step)]
        mine = batch[rank::world] or batch[:1]
        weight = 1.0 if batch[rank::world] else 0.0
        # The global batch's trained-token count: every rank knows it, so no collective is needed.
        denominator = max(1, trained_in(batch))
        total, _count = loss_sum(model, mine, pad_id, device)
        # DDP averages gradients over ranks: scale so the sum equals one process's loss on the whole batch.
        (total * weight * world / denominator).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.max_grad_norm or float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = total.detach() * weight
        if world > 1:
            dist.all_reduce(loss_value)
        loss = float(loss_value) / denominator
        step += 1
        history.append(loss)
        elapsed = time.perf_counter() - started
        tokens = sum(len(e.input_ids) for e in batch)
        metrics = {
            "loss": loss,
            "learning_rate": lr,
            "grad_norm": float(grad_norm),
            "tokens_per_s": tokens / max(elapsed, 1e-9),
        }
        if peak:
            metrics["mfu"] = 6 * n_trainable * tokens / max(elapsed, 1e-9) / (peak * world)
        if evaluation and spec.eval_every_steps and step % spec.eval_every_steps == 0:
            metrics["eval_loss"] = eval_loss(model, evaluation, pad_id, device)
        emit(
            "progress",
            step=step,
            total_steps=steps,
            metrics=metrics,
            tokens=tokens,
            seconds=elapsed,
            at=time.perf_counter(),
            cpu_s=time.process_time(),
        )
        if (step % plan.checkpoint_every == 0 or stop["cancel"]) and step < steps:
            if rank == 0:
                saving = time.perf_counter()
                path = save_checkpoint(plan, model, optimizer, scheduler, step, history)
                emit("checkpoint", step=step, path=str(path), seconds=time.perf_counter() - saving)
            if world > 1:
                dist.barrier()
    if stop["cancel"]:
        emit("cancelled", step=step)
        return 3
    final = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if torch.cuda.is_available():
        final["peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    if evaluation:
        final["eval_loss"] = eval_loss(model, evaluation, pad_id, device)
    if rank == 0:
        save_output(plan, model)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    emit("done", step=step, total_steps=steps, output=plan.output_dir, metrics=final, history=history)
    return 0


def eval_loss(model, examples: list[Example], pad_id: int, device) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), 8):
            s, c = loss_sum(model, examples[start : start + 8], pad_id, device)
            total, count = total + float(s), count + c
    model.train()
    return total / max(1, count)


def _peak_flops(device) -> float:
    import torch

    if str(device) == "cpu":
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in _PEAK_FLOPS.items() if key in name), 0.0)


if __name__ == "__main__":
    sys.exit(run(Plan.load(sys.argv[1])))
