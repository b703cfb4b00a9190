"""A real S3-API server on 127.0.0.1 for tests: moto's standalone server, over HTTP.

The engine talks to it exactly as to S3 (pyarrow's S3 client, AWS_* environment,
``s3://`` URIs); only the endpoint differs (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class ObjectStore:
    endpoint: str
    env: dict[str, str]

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self, prefix: str = "lepton") -> str:
        """A fresh, empty bucket; returns its ``s3://`` URI."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self._client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, uri: str) -> list[str]:
        """Every object key under an ``s3://bucket/prefix`` URI, sorted."""
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        pages = (
            self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@contextmanager
def s3_server() -> Iterator[ObjectStore]:
    """Start the server; meanwhile this process's AWS_* variables point at it."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "lepton-test",
        "AWS_SECRET_ACCESS_KEY": "lepton-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield ObjectStore(endpoint, env)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
