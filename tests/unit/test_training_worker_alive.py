"""A training worker has no gRPC port: its liveness is the alive file it touches from its loop, which the
container's health check (infra/docker/healthcheck.py --alive-file) reads. Without infrastructure."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from infra.docker import healthcheck
from services.training.settings import TrainingSettings
from services.training.worker import TrainingWorker

pytestmark = pytest.mark.unit
LONG_AGO = 1_000_000_000  # 2001: stale for any limit


def _stale(path: Path) -> None:
    os.utime(path, (LONG_AGO, LONG_AGO))


async def _until(condition, tries: int = 2000) -> bool:
    for _ in range(tries):
        if condition():
            return True
        await asyncio.sleep(0.005)
    return False


def test_the_alive_file_defaults_under_the_training_root(tmp_path) -> None:
    settings = TrainingSettings(data_dir=tmp_path)
    assert settings.worker_alive_file() == tmp_path / "training" / "worker.alive"
    assert TrainingSettings(training_worker_alive_file=tmp_path / "a").worker_alive_file() == tmp_path / "a"


async def test_the_worker_touches_its_alive_file_while_its_loop_runs_and_stops_when_it_ends(tmp_path) -> None:
    path = tmp_path / "run" / "worker.alive"
    settings = TrainingSettings(data_dir=tmp_path, training_worker_alive_file=path, training_heartbeat_s=0.01)
    worker = TrainingWorker(settings, name="w", consume=False)
    loop = asyncio.create_task(asyncio.Event().wait())
    alive = asyncio.create_task(worker._alive(loop))
    try:
        assert await _until(path.exists)
        assert healthcheck.alive(path, 30) == 0
        # Made stale, it is touched again: the worker keeps it fresh, not only once.
        _stale(path)
        assert healthcheck.alive(path, 30) == 1
        assert await _until(lambda: path.stat().st_mtime > LONG_AGO)
        assert healthcheck.alive(path, 30) == 0

        loop.cancel()
        await asyncio.wait_for(alive, 5)
        _stale(path)
        await asyncio.sleep(0.05)
        assert healthcheck.alive(path, 30) == 1, "a worker whose loop ended must not look alive"
    finally:
        loop.cancel()
        alive.cancel()


def test_the_health_check_refuses_a_missing_file(tmp_path) -> None:
    assert healthcheck.main(["healthcheck.py", "--alive-file", str(tmp_path / "none"), "30"]) == 1
    (tmp_path / "fresh").touch()
    assert healthcheck.main(["healthcheck.py", "--alive-file", str(tmp_path / "fresh"), "30"]) == 0
