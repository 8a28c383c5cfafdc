"""Event uuids: uuid5 of the record's place in the stream, as uuid.uuid5 writes it."""

from __future__ import annotations

import uuid

import hypothesis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import event_ids
from consumer.record import KinesisRecord

# Any code point, lone surrogates included (they cannot be encoded, as in uuid.uuid5).
any_char = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])


@hypothesis.settings(max_examples=200, deadline=None)
@given(
    stream=st.text(any_char, max_size=8),
    shard=st.text(any_char, max_size=8),
    sequence=st.from_regex(r"[0-9]{1,56}", fullmatch=True),
    sub=st.integers(min_value=0, max_value=2**31),
)
def test_event_uuid_is_uuid5(stream: str, shard: str, sequence: str, sub: int) -> None:
    """event_uuid gives str(uuid.uuid5(...)) of the same name, the text every replay relies on."""
    record = KinesisRecord(b"{}", "pk", sequence, sub, 0)
    name = f"{stream}/{shard}/{sequence}/{sub}"
    try:
        expected = str(uuid.uuid5(event_ids.UUID_NAMESPACE, name))
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            event_ids.event_uuid(stream, shard, record)
        return
    assert event_ids.event_uuid(stream, shard, record) == expected
