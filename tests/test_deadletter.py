"""Dead letters: entries (written and read back), the file sink, and the sink the settings name.

The Kinesis sink is tested in test_kinesis_sink.py.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from consumer import deadletter, wiring
from consumer.deadletter import DETAIL_MAX_CHARS, DeadLetter, DeadLetterSink, FileSink
from consumer.errors import DeadLetterError, NotADeadLetterError
from consumer.kinesis_sink import TOO_LARGE_REASON, KinesisSink
from consumer.record import KinesisRecord
from tests.support import letter


class TestEntry:
    def test_a_normal_entry_keeps_its_format(self) -> None:
        entry = letter(b"\xffbad", key="pk-1", detail="byte 0xff at 0", reason="not_utf8")
        assert entry.to_json() == (
            '{"reason":"not_utf8","detail":"byte 0xff at 0","stream":"events",'
            '"shardId":"shardId-000000000001",'
            '"sequenceNumber":"49590338271490256608559692538361571095921575989136588898",'
            '"subSequenceNumber":3,"partitionKey":"pk-1",'
            '"approximateArrivalTimestamp":1700000000123,"data":"/2JhZA=="}'
        )

    @pytest.mark.parametrize(
        ("length", "cut"),
        [
            # At the limit: kept whole.
            (DETAIL_MAX_CHARS, False),
            # One over: cut, saying how long it was.
            (DETAIL_MAX_CHARS + 1, True),
            # A hostile 5 MB answer from PostHog: cut just the same.
            (5_000_000, True),
        ],
    )
    def test_detail_is_bounded(self, length: int, cut: bool) -> None:
        detail = json.loads(letter(detail="y" * length).to_json())["detail"]
        if cut:
            assert detail == "y" * DETAIL_MAX_CHARS + f"... ({length} characters, cut)"
        else:
            assert detail == "y" * length


def read_back(line: str) -> DeadLetter:
    return DeadLetter.from_json(json.loads(line), dataless_reason=TOO_LARGE_REASON)


# What the Kinesis sink writes for an entry too large even gzipped: no data.
TOO_LARGE = {
    "reason": TOO_LARGE_REASON,
    "detail": "event_too_large: ...; re-read it from the source stream",
    "originalReason": "event_too_large",
    "stream": "events",
    "shardId": "shardId-000000000001",
    "sequenceNumber": "4959009",
    "subSequenceNumber": 0,
    "partitionKey": "pk-1",
    "approximateArrivalTimestamp": 1_700_000_000_123,
    "dataLength": 2_000_000,
    "dataSha256": "0" * 64,
}


class TestReadBack:
    def test_an_entry_reads_back_as_it_was_written(self) -> None:
        """from_json undoes to_json, and record() gives the record of()'s was made from."""
        original = KinesisRecord(b"\xffbad", "pk-1", "4959001", 3, 1_700_000_000_123)
        entry = DeadLetter.of(original, stream="events", shard_id="s-1", reason="r", detail="d")
        again = read_back(entry.to_json())
        assert again == entry
        assert again.record() == original

    def test_an_entry_without_data_is_written_on_as_it_was_read(self) -> None:
        """The Kinesis sink's stand-in keeps its own keys; it holds no record."""
        entry = read_back(json.dumps(TOO_LARGE))
        assert (entry.reason, entry.sequence_number) == (TOO_LARGE_REASON, "4959009")
        assert entry.record() is None
        assert json.loads(entry.to_json()) == TOO_LARGE

    @pytest.mark.parametrize(
        ("change", "problem"),
        [
            # An entry without its position.
            ({"sequenceNumber": None}, "sequenceNumber is missing or not a str"),
            # A boolean where the sub-sequence number goes.
            ({"subSequenceNumber": True}, "subSequenceNumber is missing or not a int"),
            # Data that is not base64.
            ({"data": "*/2JhZA=="}, "data is not base64"),
            # No data, and not the reason of an entry stored without it.
            ({"data": None}, "data is missing or not a str"),
        ],
    )
    def test_what_is_no_entry_is_refused_saying_why(
        self, change: dict[str, Any], problem: str
    ) -> None:
        """A good entry with ``change`` made (None: the key removed)."""
        document = json.loads(letter(b"\xffbad").to_json())
        document.update(change)
        with pytest.raises(NotADeadLetterError) as caught:
            DeadLetter.from_json(
                {k: v for k, v in document.items() if v is not None},
                dataless_reason=TOO_LARGE_REASON,
            )
        assert str(caught.value) == problem

    def test_a_dataless_reason_with_data_is_an_ordinary_entry(self) -> None:
        entry = letter(reason=TOO_LARGE_REASON)
        assert read_back(entry.to_json()) == entry


class TestFileSink:
    def test_lines_round_trip(self, tmp_path: Path) -> None:
        path = tmp_path / "dead-letter.jsonl"
        first, second = letter(b"\xff", sequence="1"), letter(detail="two\nlines", sequence="2")
        FileSink(path).write([first])
        FileSink(path).write([second])
        assert path.read_text().splitlines() == [first.to_json(), second.to_json()]

    def test_short_writes_still_make_whole_lines(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_write = os.write
        calls: list[int] = []

        def one_byte(fd: int, data: Any) -> int:
            calls.append(fd)
            return real_write(fd, bytes(data[:1]))

        monkeypatch.setattr(os, "write", one_byte)
        path = tmp_path / "dead-letter.jsonl"
        entries = [letter(sequence="1"), letter(sequence="2")]
        FileSink(path).write(entries)
        expected = "".join(entry.to_json() + "\n" for entry in entries)
        assert path.read_text() == expected
        assert len(calls) == len(expected)

    def test_a_write_that_takes_nothing_is_an_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(os, "write", lambda _fd, _data: 0)
        with pytest.raises(DeadLetterError, match="took no bytes"):
            FileSink(tmp_path / "dead-letter.jsonl").write([letter()])

    def test_a_torn_last_line_is_finished_before_ours(self, tmp_path: Path) -> None:
        path = tmp_path / "dead-letter.jsonl"
        path.write_bytes(b'{"reason":"not_js')  # a crash in the middle of a line
        entry = letter()
        FileSink(path).write([entry])
        assert path.read_text().splitlines() == ['{"reason":"not_js', entry.to_json()]

    def test_directories_are_fsynced_when_the_file_is_new(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real_fsync = os.fsync
        synced: list[tuple[int, bool]] = []

        def record(fd: int) -> None:
            status = os.fstat(fd)
            synced.append((status.st_ino, stat.S_ISDIR(status.st_mode)))
            real_fsync(fd)

        def inode(path: Path) -> int:
            return path.stat().st_ino

        monkeypatch.setattr(os, "fsync", record)
        path = tmp_path / "a" / "b" / "dead-letter.jsonl"
        sink = FileSink(path)

        sink.write([letter()])  # creates a/, b/ and the file: every entry made durable
        assert sorted(synced) == sorted(
            [
                (inode(path), False),
                (inode(path.parent), True),
                (inode(tmp_path / "a"), True),
                (inode(tmp_path), True),
            ]
        )

        synced.clear()
        sink.write([letter()])  # the same file: only its data
        assert synced == [(inode(path), False)]

        synced.clear()
        path.rename(path.with_suffix(".old"))  # rotated away: a new file is created
        sink.write([letter()])
        assert synced == [(inode(path), False), (inode(path.parent), True)]

        synced.clear()
        FileSink(path).write([letter()])  # another process may have created it unsynced
        assert synced == [(inode(path), False), (inode(path.parent), True)]

    def test_os_errors_are_translated(self, tmp_path: Path) -> None:
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("")
        with pytest.raises(DeadLetterError, match="not-a-folder") as caught:
            FileSink(blocker / "dead-letter.jsonl").write([letter()])
        assert isinstance(caught.value.__cause__, OSError)

    def test_nothing_to_write_creates_nothing(self, tmp_path: Path) -> None:
        FileSink(tmp_path / "dead-letter.jsonl").write([])
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setting", "kind"),
    [
        # A path: the file sink, nothing created yet.
        ("file:dead/dl.jsonl", FileSink),
        # A stream: the Kinesis sink (building a boto3 client calls nothing).
        ("kinesis:dead-letters", KinesisSink),
    ],
)
def test_the_wiring_builds_the_named_sink(make_settings: Any, setting: str, kind: type) -> None:
    assert isinstance(wiring.dead_letter_sink(make_settings(deadLetter=setting)), kind)


def test_build_sink_asks_for_a_stream_sink_only_for_a_stream(tmp_path: Path) -> None:
    """A file target needs no AWS: the stream sink's factory is not even called."""
    asked: list[str] = []

    def stream_sink(stream: str) -> DeadLetterSink:
        asked.append(stream)
        return FileSink(tmp_path / "stand-in.jsonl")

    file_target = deadletter.DeadLetterTarget(deadletter.DeadLetterKind.FILE, "dl.jsonl")
    assert isinstance(deadletter.build_sink(file_target, stream_sink), FileSink)
    assert asked == []
    stream_target = deadletter.DeadLetterTarget(deadletter.DeadLetterKind.KINESIS, "dl")
    deadletter.build_sink(stream_target, stream_sink)
    assert asked == ["dl"]
