"""boto3 clients configured like the daemon: same region, endpoints and credentials.

Static keys (``awsAccessKeyId``/``awsSecretAccessKey``) are used when set; otherwise
boto3's default chain applies (environment, profile, ECS task role, instance profile),
as it does for the daemon's ``DefaultCredentialsProvider``.

:class:`AwsAccess` holds just those values (built from the settings by
:func:`consumer.wiring.aws_access`), so what needs a client takes them, not the settings.
boto3 is imported only when a client is built: a worker dead-lettering to a file never
loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# Fail a probe fast instead of hanging a start-up check for minutes.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 15

Service = Literal["kinesis", "dynamodb"]


@dataclass(frozen=True, slots=True)
class AwsAccess:
    """Where the daemon's AWS services are, and the static keys if any (never in repr)."""

    region: str | None
    kinesis_endpoint: str | None
    dynamodb_endpoint: str | None
    access_key_id: str | None = field(repr=False)
    secret_access_key: str | None = field(repr=False)

    def endpoint(self, service: Service) -> str | None:
        """The endpoint configured for ``service``; None means the region's own."""
        return self.kinesis_endpoint if service == "kinesis" else self.dynamodb_endpoint


def client(access: AwsAccess, service: Service) -> Any:
    """Return a boto3 client for ``service`` pointed where the daemon points."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        service,
        region_name=access.region,
        endpoint_url=access.endpoint(service),
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=BotoConfig(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )
