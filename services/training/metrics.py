"""Training figures on the API's Prometheus endpoint (:9102), read from PostgreSQL on each scrape.

Jobs train in worker processes, any number of them, often on other hosts and without a port of
their own. Everything a worker learns about its job already reaches PostgreSQL: the job's state
and the `PROGRESS` (at most once a second, and the last step) and `CHECKPOINT` events with their
figures. So the API exports them: one target to scrape however many workers run, and the figures
of a job whose worker died stay visible until another worker resumes it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.training.entities import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED

_log = logging.getLogger(__name__)
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
JOB_LABELS = ["job_id", "model"]
# Per-job gauges: metric name -> (help, where the value is: the latest progress's metrics, or the job).
PROGRESS_FIGURES = {
    "loss": ("tessera_training_job_loss", "Training loss at the job's latest step"),
    "learning_rate": ("tessera_training_job_learning_rate", "Learning rate at the job's latest step"),
    "tokens_per_s": ("tessera_training_job_tokens_per_second", "Tokens per second of the job's latest step"),
    "grad_norm": ("tessera_training_job_grad_norm", "Gradient norm (before clipping) at the job's latest step"),
    "eval_loss": ("tessera_training_job_eval_loss", "The job's latest evaluation loss"),
    "mfu": ("tessera_training_job_mfu", "Model FLOPs utilisation of the job's latest step (GPU)"),
}


class TrainingMetrics(Collector):
    """One per process (Prometheus names are global); the API attaches its reader when it starts."""

    def __init__(self) -> None:
        self._source: tuple[asyncio.AbstractEventLoop, int, Callable[[], Awaitable[dict]], float] | None = None

    def attach(self, read: Callable[[], Awaitable[dict]], timeout_s: float) -> None:
        """`read` runs on the calling thread's event loop (the API's: its database pool lives there)."""
        self._source = (asyncio.get_running_loop(), threading.get_ident(), read, timeout_s)

    def detach(self, read: Callable[[], Awaitable[dict]]) -> None:
        """Stop reading through `read` (another app in the same process may have attached since)."""
        if self._source is not None and self._source[2] == read:
            self._source = None

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families({}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        source = self._source
        if source is None:
            return iter(())
        loop, loop_thread, read, timeout_s = source
        snapshot: dict = {}
        if threading.get_ident() != loop_thread:  # never block the loop the read needs
            try:
                snapshot = asyncio.run_coroutine_threadsafe(read(), loop).result(timeout_s)
            except Exception:  # noqa: BLE001 - a scrape must answer; `..._metrics_up 0` says why it is empty
                _log.warning("reading training figures for a scrape failed", exc_info=True)
                snapshot = {}
        return iter(self._families(snapshot))

    @staticmethod
    def _families(snapshot: dict) -> list[GaugeMetricFamily]:
        up = GaugeMetricFamily("tessera_training_metrics_up", "1 when this scrape read the jobs from PostgreSQL")
        up.add_metric([], 1.0 if snapshot else 0.0)
        states = GaugeMetricFamily("tessera_training_jobs", "Jobs by state", labels=["state"])
        counts = snapshot.get("states", {})
        for state in STATES:
            states.add_metric([state], float(counts.get(state, 0)))
        queue = GaugeMetricFamily("tessera_training_queue_depth", "Jobs waiting for a worker")
        queue.add_metric([], float(counts.get(QUEUED, 0)))
        step = GaugeMetricFamily("tessera_training_job_step", "The job's latest step", labels=JOB_LABELS)
        total = GaugeMetricFamily("tessera_training_job_total_steps", "Steps the job runs", labels=JOB_LABELS)
        running = GaugeMetricFamily("tessera_training_job_running", "1 while the job runs", labels=JOB_LABELS)
        figures = {
            key: GaugeMetricFamily(name, text, labels=JOB_LABELS) for key, (name, text) in PROGRESS_FIGURES.items()
        }
        ckpt_s = GaugeMetricFamily(
            "tessera_training_job_checkpoint_seconds",
            "Seconds the job's latest checkpoint took to write",
            labels=JOB_LABELS,
        )
        ckpt_step = GaugeMetricFamily(
            "tessera_training_job_checkpoint_step", "Step of the job's latest checkpoint", labels=JOB_LABELS
        )
        for job in snapshot.get("jobs", []):
            labels = [job["job_id"], job["model"] or ""]
            progress = job["progress"] or {}
            step.add_metric(labels, float(max(job["step"], progress.get("step", 0))))
            total.add_metric(labels, float(job["total_steps"]))
            running.add_metric(labels, 1.0 if job["state"] == RUNNING else 0.0)
            for key, value in (progress.get("metrics") or {}).items():
                if key in figures:
                    figures[key].add_metric(labels, float(value))
            checkpoint = job["checkpoint"] or {}
            if "checkpoint_seconds" in (checkpoint.get("metrics") or {}):
                ckpt_s.add_metric(labels, float(checkpoint["metrics"]["checkpoint_seconds"]))
            if job["checkpoint_step"]:
                ckpt_step.add_metric(labels, float(job["checkpoint_step"]))
        return [up, states, queue, step, total, running, *figures.values(), ckpt_s, ckpt_step]


TRAINING_METRICS = TrainingMetrics()
REGISTRY.register(TRAINING_METRICS)
