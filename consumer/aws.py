"""boto3 clients configured like the daemon: same region, endpoints and credentials.

Static keys (``awsAccessKeyId``/``awsSecretAccessKey``) are used when set; otherwise
boto3's default chain applies (environment, profile, ECS task role, instance profile),
as it does for the daemon's ``DefaultCredentialsProvider``.
"""

from __future__ import annotations

from typing import Any, Literal

import boto3
from botocore.config import Config as BotoConfig

from consumer.config import Settings

# Fail a probe fast instead of hanging a start-up check for minutes.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 15


def client(settings: Settings, service: Literal["kinesis", "dynamodb"]) -> Any:
    """Return a boto3 client for ``service`` pointed where the daemon points."""
    endpoint = settings.kinesis_endpoint if service == "kinesis" else settings.dynamodb_endpoint
    return boto3.client(
        service,
        region_name=settings.region,
        endpoint_url=endpoint,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        config=BotoConfig(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )
