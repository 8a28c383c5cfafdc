"""LineReader: the same lines as BufferedReader.readline, read into one reused buffer."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import lines
from consumer.lines import LineReader

SMALL = 16  # a first buffer this small makes every case grow and move the buffer


class Pipe:
    """A stream giving its data in the pieces a pipe would, one piece per read at most."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = [piece for piece in pieces if piece]
        self.reads = 0

    def readinto1(self, buffer: memoryview, /) -> int:
        self.reads += 1
        if not self._pieces:
            return 0
        piece = self._pieces[0]
        count = min(len(piece), len(buffer))
        buffer[:count] = piece[:count]
        if count == len(piece):
            self._pieces.pop(0)
        else:
            self._pieces[0] = piece[count:]
        return count


def read_all(reader: LineReader) -> Iterator[bytes]:
    while line := reader.readline():
        yield line


def reference(data: bytes) -> list[bytes]:
    """What BufferedReader.readline gives for ``data`` (the shard process's stdin)."""
    stream = io.BufferedReader(io.BytesIO(data))
    return list(iter(stream.readline, b""))


@pytest.mark.parametrize(
    "data",
    [
        b"",  # EOF at once
        b"one line, no newline",  # the rest before EOF
        b"a\nb\n",  # lines, each with its newline
        b"\n\n\n",  # blank lines are lines
        b"a\r\nb\rc\n",  # only \n ends a line
        b"x" * SMALL + b"\n",  # a line exactly the first buffer, and its newline
        b"x" * (SMALL - 1) + b"\n" + b"y" * 3 + b"\n",  # the newline as the buffer's last byte
        b"x" * (10 * SMALL) + b"\n" + b"tail",  # a line many times the buffer
        (b"y" * (SMALL // 2 + 1) + b"\n") * 7,  # the held rest moved to the front each time
        b"\xff\x00\xfe\n\x00",  # any bytes
    ],
)
def test_lines_as_readline_gives_them(data: bytes) -> None:
    # One piece, then one byte per read: the lines do not depend on how the pipe cuts them.
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        reader = LineReader(Pipe(pieces), first_buffer_bytes=SMALL)
        assert list(read_all(reader)) == reference(data)
        assert reader.readline() == b""  # and EOF stays EOF


@given(
    st.lists(st.binary(max_size=3 * SMALL) | st.sampled_from([b"\n", b"x\n", b"\n\n"])),
    st.lists(st.integers(min_value=1, max_value=4 * SMALL), min_size=1),
)
def test_any_bytes_in_any_pieces_read_as_readline(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    pieces, at = [], 0
    for index in range(len(data)):
        size = cuts[index % len(cuts)]
        pieces.append(data[at : at + size])
        at += size
        if at >= len(data):
            break
    assert b"".join(pieces) == data
    reader = LineReader(Pipe(pieces), first_buffer_bytes=SMALL)
    assert list(read_all(reader)) == reference(data)


def test_a_line_is_returned_without_waiting_for_more() -> None:
    """A checkpoint answer is read as soon as the pipe has it: no read past its newline."""
    pipe = Pipe([b'{"action":"checkpoint"}\n', b"never read\n"])
    reader = LineReader(pipe)
    assert reader.readline() == b'{"action":"checkpoint"}\n'
    assert pipe.reads == 1


def test_stdin_as_the_shard_process_has_it() -> None:
    """sys.stdin.buffer is a BufferedReader; io.BytesIO in the protocol tests."""
    data = b"first\n" + b"z" * (3 * lines.FIRST_BUFFER_BYTES) + b"\nlast"
    for stream in (io.BufferedReader(io.BytesIO(data)), io.BytesIO(data)):
        assert list(read_all(LineReader(stream))) == reference(data)


def test_the_buffer_is_kept_for_the_next_long_line_and_given_back_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lines, "MAX_KEPT_BYTES", 8 * SMALL)
    long_line = b"x" * (5 * SMALL) + b"\n"
    longer_line = b"y" * (9 * SMALL) + b"\n"
    reader = LineReader(Pipe([long_line, b"a\n", longer_line, b"b\n"]), first_buffer_bytes=SMALL)
    assert reader.readline() == long_line
    assert reader.buffer_bytes == 8 * SMALL  # grown by doubling, kept
    assert reader.readline() == b"a\n"
    assert reader.buffer_bytes == 8 * SMALL
    assert reader.readline() == longer_line
    assert reader.buffer_bytes == SMALL  # past the bound: given back
    assert reader.readline() == b"b\n"


def test_a_view_left_alive_by_an_error_does_not_stop_the_reader() -> None:
    """A read that raised keeps a view of the buffer in its traceback: the buffer still grows."""

    class FailingOnce(Pipe):
        def readinto1(self, buffer: memoryview, /) -> int:
            if self.reads == 1:
                self.reads += 1
                raise OSError("interrupted")
            return super().readinto1(buffer)

    data = b"ab" + b"c" * (6 * SMALL) + b"\nd\n"
    reader = LineReader(FailingOnce([data[:2], data[2:]]), first_buffer_bytes=SMALL)
    with pytest.raises(OSError, match="interrupted") as caught:
        reader.readline()
    assert caught.value.__traceback__ is not None  # the view is still referenced from here
    assert reader.readline() == data[: 6 * SMALL + 3]
    assert reader.readline() == b"d\n"
