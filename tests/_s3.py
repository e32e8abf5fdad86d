"""A real S3-compatible server on 127.0.0.1 for object-store tests: moto in server mode.

``s3_server`` starts one ``ThreadedMotoServer`` per session on a free port; ``s3_bucket``
points the standard AWS environment (``AWS_ENDPOINT_URL``, dummy keys, region) at it for one
test, so every client that honours it (s3fs, botocore, subprocesses, in-process Dask
workers) talks to that server, and yields a fresh, empty bucket as ``s3://NAME``.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["S3_ENV", "s3_bucket", "s3_fs", "s3_server"]

#: The environment ``s3_bucket`` sets, besides ``AWS_ENDPOINT_URL``.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "roadnet-test",
    "AWS_SECRET_ACCESS_KEY": "roadnet-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server on 127.0.0.1 (one per session)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_fs() -> Any:
    """A fresh s3fs filesystem on the environment's endpoint (no cached listings)."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket on the test server as ``s3://NAME``; the AWS environment points there."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"roadnet-{uuid.uuid4().hex[:12]}"
    s3_fs().mkdir(bucket)
    yield f"s3://{bucket}"
