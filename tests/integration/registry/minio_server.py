"""A real MinIO for the artifact-store tests: built by infra/minio/minio.sh, started here on 127.0.0.1
with a temporary data folder, its bucket made with one signed S3 request (no S3 SDK needed)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
USER, PASSWORD, REGION = "tessera-test", "tessera-test-secret", "us-east-1"


@dataclass(frozen=True)
class MinioServer:
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen

    def make_bucket(self, bucket: str, timeout_s: float = 30.0) -> None:
        # A just-ready MinIO can still answer 503 while its object layer comes up: try again for a while.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _signed_put(self.endpoint, f"/{bucket}", self.access_key, self.secret_key)
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or time.monotonic() > deadline:
                    raise RuntimeError(f"creating bucket {bucket}: HTTP {exc.code} {exc.read()[:500]!r}") from exc
            except (urllib.error.URLError, ConnectionError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"creating bucket {bucket}: {exc}") from exc
            time.sleep(0.2)


def binary() -> tuple[str | None, str]:
    """The MinIO binary (building it the first time), or None and why not."""
    if shutil.which("go") is None and not (Path.home() / ".cache" / "tessera" / "bin" / "minio").exists():
        return None, "MinIO is built from the Go module proxy and go is not installed here"
    result = subprocess.run(
        ["bash", str(ROOT / "infra" / "minio" / "minio.sh"), "fetch"], capture_output=True, text=True, timeout=3600
    )
    if result.returncode != 0:
        return None, f"infra/minio/minio.sh could not build MinIO: {result.stderr[-2000:]}"
    return result.stdout.strip().splitlines()[-1], ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(path: str, data_dir: Path, log: Path, tries: int = 3) -> MinioServer:
    """Start MinIO on free ports; another process can take a port between the pick and the bind, so retry."""
    for attempt in range(1, tries + 1):
        try:
            return _start_once(path, data_dir, log)
        except _Exited:
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


class _Exited(RuntimeError):
    pass


def _start_once(path: str, data_dir: Path, log: Path, ready_timeout_s: float = 60.0) -> MinioServer:
    port, console = _free_port(), _free_port()
    env = {"MINIO_ROOT_USER": USER, "MINIO_ROOT_PASSWORD": PASSWORD, "MINIO_BROWSER": "off", "HOME": str(data_dir)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                path,
                "server",
                str(data_dir),
                "--address",
                f"127.0.0.1:{port}",
                "--console-address",
                f"127.0.0.1:{console}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if process.poll() is not None:
            raise _Exited(f"minio exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=2) as reply:
                if reply.status == 200:
                    return MinioServer(endpoint, USER, PASSWORD, process)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(f"minio did not become ready:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def stop(server: MinioServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _signed_put(endpoint: str, path: str, access_key: str, secret_key: str) -> None:
    """An empty-bodied PUT signed with AWS Signature Version 4 (what CreateBucket is)."""
    host = endpoint.split("://", 1)[1]
    now = datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["PUT", path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), REGION), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{endpoint}{path}", method="PUT", data=b"")
    for name, value in headers.items():
        if name != "host":
            request.add_header(name, value)
    request.add_header(
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200, reply.status


BUCKET = "tessera-test"


def s3_settings(server: MinioServer, prefix: str) -> dict:
    """RegistrySettings overrides that put the artifacts under s3://BUCKET/<prefix> on this MinIO."""
    return {
        "registry_artifact_uri": f"s3://{BUCKET}/{prefix}",
        "registry_s3_endpoint": server.endpoint,
        "registry_s3_region": REGION,
        "registry_s3_access_key_id": server.access_key,
        "registry_s3_secret_access_key": server.secret_key,
        "registry_s3_allow_http": True,
    }


def minio_fixture(tmp_path_factory):
    """Module fixture body: a running MinIO with BUCKET, or a skip that says why there is none."""
    import pytest

    path, why = binary()
    if path is None:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("minio")
    server = start(path, folder / "data", folder / "minio.log")
    try:
        server.make_bucket(BUCKET)
        yield server
    finally:
        stop(server)
