"""Event uuids: derived from the record's place in the stream alone, so replays collapse.

The uuid of a record's event is ``str(uuid.uuid5(UUID_NAMESPACE, name))`` with ``name``
``stream/shard/sequence number/subsequence number``: the same for every delivery of the
record, on every worker and version, and PostHog keeps one event per uuid.
"""

from __future__ import annotations

import hashlib
import uuid

from consumer.record import KinesisRecord

# A fixed namespace makes uuids stable across versions and machines. Never change it:
# doing so would turn every replay after an upgrade into a duplicate.
UUID_NAMESPACE = uuid.UUID("6f1c7a2e-4b8d-5e0a-9c3f-2d7b1e8a4c60")
_NAMESPACE_BYTES = UUID_NAMESPACE.bytes


def event_uuid(stream: str, shard_id: str, record: KinesisRecord) -> str:
    """Return the deterministic uuid of ``record``'s event: ``str(uuid.uuid5(...))``."""
    return EventIds(stream, shard_id)(record)


class EventIds:
    """The uuids of one shard's events: ``str(uuid.uuid5(UUID_NAMESPACE, name))``.

    ``name`` is ``stream/shard/sequence number/subsequence number``. Computed as
    uuid.uuid5 computes it (RFC 4122 section 4.3: the first 16 bytes of the SHA-1 of
    namespace and name, version 5, variant RFC 4122), without building a UUID object, and
    hashing the namespace and the shard's part of the name once: 4x faster, and the same
    text (tests/test_mapping.py compares them).
    """

    def __init__(self, stream: str, shard_id: str) -> None:
        """Hash what every name of this shard starts with."""
        prefix = f"{stream}/{shard_id}/".encode()
        self._prefix = hashlib.sha1(_NAMESPACE_BYTES + prefix, usedforsecurity=False)

    def __call__(self, record: KinesisRecord) -> str:
        """The uuid of ``record``'s event."""
        digest = self._prefix.copy()
        digest.update(f"{record.sequence_number}/{record.sub_sequence_number}".encode())
        text = digest.hexdigest()
        # Hex digit 12 is the version (5); digit 16's top two bits are the variant (10).
        return (
            f"{text[:8]}-{text[8:12]}-5{text[13:16]}-"
            f"{_VARIANT_DIGIT[text[16]]}{text[17:20]}-{text[20:32]}"
        )


# A hex digit with its top two bits set to 10 (RFC 4122's variant), by the digit.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}
