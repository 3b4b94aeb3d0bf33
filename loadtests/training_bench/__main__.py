"""Training throughput: a Tessera job's trainer vs plain Hugging Face Trainer, in the same run.

    python -m loadtests.training_bench [--steps 20] [--batch 8] [--rows 64] [--threads 2]

Both train the tiny Llama (fp32, CPU) on the same tokenized chat rows (the
examples Tessera's pre-flight builds, the same loss mask), the same batches in
the same order, batch size, sequence length and torch thread count, each in its
own process. Reported: tokens/s (non-padding input tokens over the wall time
between the first and the last step's end: the first step is warm-up), Tessera's speed as a multiple of
the Trainer's, the cost of a checkpoint and of a resume, and peak memory.

Tokens per CPU-second (the process's CPU time over the same steps, all its threads) are reported
beside wall tokens/s: on a host shared with other work, wall time measures how much CPU each
process happened to get (runs in the same round saw loads from 14 to 24 on 2 cores), CPU time how
much work each step took. Rounds alternate which trainer runs first; the best of each is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtests.report import save, table
from services.fixtures import capitals
from services.fixtures.tiny_llama import build_tiny_llama
from services.training.entities import JobSpec
from services.training.trainer import Plan

REPO = Path(__file__).resolve().parents[2]


def _env(threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": f"{REPO}:{REPO / 'protos' / 'gen' / 'python'}",
    }


def run_tessera(plan_path: Path, threads: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "services.training.trainer", str(plan_path)],
        cwd=REPO,
        env=_env(threads),
        capture_output=True,
        text=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0:
        failed = [line.get("error") for line in lines if line["event"] == "failed"]
        raise SystemExit(f"the Tessera trainer failed ({out.returncode}): {failed or out.stderr[-2000:]}")
    return lines


def run_hf(args: argparse.Namespace, base: Path, rows_path: Path, threads: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.training_bench.hf_trainer",
            str(base),
            str(rows_path),
            str(args.steps),
            str(args.batch),
            str(args.seq),
            str(threads),
        ],
        cwd=REPO,
        env=_env(threads),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    # Runs of each trainer, alternated, best kept: a shared host's load moves between runs.
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-costs", action="store_true", help="throughput only (no checkpoint/resume runs)")
    args = parser.parse_args()
    base = build_tiny_llama()
    work = Path(tempfile.mkdtemp(prefix="training-bench-"))
    rows_path = work / "rows.jsonl"
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in capitals.filler_text_rows(args.rows)))
    spec = JobSpec(
        base_model="bench.tiny.llama",
        base_version=1,
        train_dataset="bench.data.rows",
        method="FULL",
        steps=args.steps,
        learning_rate=1e-4,
        lr_schedule="constant",
        batch_size=args.batch,
        sequence_length=args.seq,
        seed=3,
    )

    def plan(name: str, resume: str = "", every: int = 10**9) -> Path:
        p = Plan(
            spec=spec,
            base_dir=str(base),
            train_path=str(rows_path),
            eval_path="",
            output_dir=str(work / name / "out"),
            checkpoint_dir=str(work / name / "ckpt"),
            resume_from=resume,
            threads=args.threads,
            checkpoint_every=every,
            deterministic=False,
        )
        path = work / f"{name}.json"
        path.write_text(json.dumps({**p.__dict__, "spec": spec.to_json()}))
        return path

    def run_tessera_timed() -> dict:
        run_lines = run_tessera(plan("tessera"), args.threads)
        # Between the first and the last step's end: data, forward, backward, optimizer, logging.
        progress = [line for line in run_lines if line["event"] == "progress"]
        tokens = sum(line["tokens"] for line in progress[1:])
        return {
            "tokens_per_s": tokens / (progress[-1]["at"] - progress[0]["at"]),
            "tokens_per_cpu_s": tokens / max(progress[-1]["cpu_s"] - progress[0]["cpu_s"], 1e-9),
            "lines": run_lines,
        }

    runs: dict[str, list[dict]] = {"hf": [], "tessera": []}
    for round_ in range(max(1, args.repeats)):
        # Alternate which goes first: a shared host's load drifts within a round too.
        order = ("hf", "tessera") if round_ % 2 == 0 else ("tessera", "hf")
        for name in order:
            run = run_hf(args, base, rows_path, args.threads) if name == "hf" else run_tessera_timed()
            runs[name].append(run)
            print(
                f"round {round_} {name}: {run['tokens_per_s']:.0f} tokens/s, {run['tokens_per_cpu_s']:.0f} tokens/CPU-s"
                f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )

    def best(name: str, key: str) -> dict:
        return max(runs[name], key=lambda r: r[key])

    hf, tessera = best("hf", "tokens_per_s"), best("tessera", "tokens_per_s")
    hf_cpu, tessera_cpu = (
        best("hf", "tokens_per_cpu_s")["tokens_per_cpu_s"],
        best("tessera", "tokens_per_cpu_s")["tokens_per_cpu_s"],
    )
    lines = tessera["lines"]
    done = next(line for line in lines if line["event"] == "done")
    fresh = next(line for line in lines if line["event"] == "started")

    rows = [
        ["Hugging Face Trainer", hf["tokens_per_s"], 1.0, hf_cpu, 1.0, hf["peak_rss_bytes"] / 2**20],
        [
            "Tessera job trainer",
            tessera["tokens_per_s"],
            tessera["tokens_per_s"] / hf["tokens_per_s"],
            tessera_cpu,
            tessera_cpu / hf_cpu,
            done["metrics"]["peak_rss_bytes"] / 2**20,
        ],
    ]
    print(
        f"\ntraining throughput: tiny Llama, fp32, CPU, {args.threads} threads, batch {args.batch}, seq {args.seq},"
        f" {args.steps} steps, best of {args.repeats} alternating runs each"
    )
    print(table(["trainer", "tokens/s (wall)", "x Trainer", "tokens/CPU-s", "x Trainer", "peak RSS MiB"], rows))
    costs = []
    if not args.skip_costs:
        checkpointed = run_tessera(plan("ckpt", every=max(1, args.steps // 2)), args.threads)
        ckpt = next(line for line in checkpointed if line["event"] == "checkpoint")
        resumed = run_tessera(plan("resumed", resume=ckpt["path"]), args.threads)
        resumed_start = next(line for line in resumed if line["event"] == "started")
        costs = [
            ["checkpoint (model, optimizer, scheduler, RNG, data position)", ckpt["seconds"]],
            ["start, fresh (load model, tokenize)", fresh["setup_s"]],
            ["start, resumed from the checkpoint", resumed_start["setup_s"]],
        ]
        print(table(["cost", "seconds"], costs))
    path = save(
        "training_bench",
        {
            "args": vars(args),
            "runs": {name: [{k: v for k, v in r.items() if k != "lines"} for r in rs] for name, rs in runs.items()},
            "costs": costs,
            "bench_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        },
    )
    print(f"results: {path}  (took {time.process_time():.0f} s CPU in this process)")


if __name__ == "__main__":
    main()
