"""The processes the benchmark runs: the registry, Tessera serving and vLLM's own OpenAI server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc

from services.serving.llm_engine import OFFLINE_ENV

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, cpus: set[int] | None = None
    ) -> None:
        """`cpus`: the CPUs it (and every thread and child it starts) may run on; None: any."""
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **OFFLINE_ENV, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if cpus is None else (lambda: os.sched_setaffinity(0, cpus)),
        )

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)  # its own session: the engine core goes too
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()


async def wait_grpc(process: Process, address: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                await asyncio.wait_for(channel.channel_ready(), 2.0)
                return
            except TimeoutError:
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.name} did not listen on {address}")


async def wait_http(process: Process, url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            process.check_alive()
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{process.name} did not answer {url}")
            await asyncio.sleep(1.0)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
