"""What a job will cost before it runs: parameters, trainable parameters, time and peak memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.training.entities import JobSpec
from services.training.examples import Example

_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Estimate:
    parameters: int
    trainable: int
    seconds: float
    peak_memory_bytes: int


def estimate(base_dir: Path, spec: JobSpec, examples: list[Example], steps: int, flops: float) -> Estimate:
    """Counts parameters on the meta device (no weights loaded); FLOPs 2P forward + 2P backward + 2T weight grads."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    if spec.method == "LORA":
        targets = set(spec.lora_target_modules or _DEFAULT_TARGETS)
        rank = spec.lora_rank or 16
        trainable = sum(
            rank * (m.in_features + m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
        )
    else:
        trainable = parameters
    mean_tokens = sum(len(e.input_ids) for e in examples) / max(1, len(examples))
    tokens = mean_tokens * spec.batch_size * steps
    seconds = (4 * parameters + 2 * trainable) * tokens / max(flops * max(1, spec.workers_per_job), 1.0)
    hidden = getattr(config, "hidden_size", 0)
    layers = getattr(config, "num_hidden_layers", 0)
    vocab = getattr(config, "vocab_size", 0)
    longest = max((len(e.input_ids) for e in examples), default=spec.sequence_length)
    per_rank = max(1, spec.batch_size // max(1, spec.workers_per_job)) * longest
    # fp32 weights, gradients and Adam's two moments for trainable ones; activations (~34 values per
    # hidden unit per layer, as in Korthikanti et al.) and the logits with their gradient.
    activations = per_rank * (34 * hidden * layers + 2 * vocab) * 4
    peak = 4 * parameters + 12 * trainable + activations
    return Estimate(parameters, trainable, seconds, int(peak))
