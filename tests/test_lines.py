"""LineReader: the same lines as BufferedReader.readline, read into one reused buffer."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer import lines
from consumer.lines import LineReader

SMALL = 16  # a first buffer this small makes every case grow and move the buffer
ANSWER_TIMEOUT_SECONDS = 20.0  # a shared, loaded machine; a hang is for ever


class Pipe:
    """A stream giving its data in the pieces a pipe would, one piece per read at most."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = [piece for piece in pieces if piece]
        self.reads = 0

    def readinto(self, buffer: memoryview, /) -> int:
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
        pipe = Pipe(pieces)
        reader = LineReader(pipe, first_buffer_bytes=SMALL)
        assert list(read_all(reader)) == reference(data)
        reads = pipe.reads
        assert reader.readline() == b""  # and EOF stays EOF, without reading again
        assert pipe.reads == reads


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


class Daemon:
    """The daemon's side of stdin: it writes one line, then waits for the answer.

    Each line's bytes come in the given pieces; a read after the whole line was given,
    before the reader returned it, is a read that would wait forever.
    """

    def __init__(self, lines: list[bytes], cuts: list[int]) -> None:
        self._lines = lines
        self._cuts = cuts
        self._line = 0
        self._given = 0
        self._reads = 0

    def readinto(self, buffer: memoryview, /) -> int:
        if self._line == len(self._lines):
            return 0  # the daemon closed stdin
        line = self._lines[self._line]
        assert self._given < len(line), "a read with the whole line given would block"
        size = min(self._cuts[self._reads % len(self._cuts)], len(buffer), len(line) - self._given)
        self._reads += 1
        buffer[:size] = line[self._given : self._given + size]
        self._given += size
        return size

    def answered(self) -> None:
        self._line += 1
        self._given = 0


@given(
    st.lists(st.integers(min_value=0, max_value=5 * SMALL), min_size=1, max_size=8),
    st.lists(st.integers(min_value=1, max_value=3 * SMALL), min_size=1, max_size=5),
)
def test_no_read_waits_for_input_a_line_does_not_need(lengths: list[int], cuts: list[int]) -> None:
    """Whatever the lines' lengths and the pieces the pipe gives, each line is returned
    with no read past its newline: the daemon has nothing more to give until answered."""
    lines = [bytes([65 + n % 26]) * length + b"\n" for n, length in enumerate(lengths)]
    daemon = Daemon(lines, cuts)
    reader = LineReader(daemon, first_buffer_bytes=SMALL)
    for line in lines:
        assert reader.readline() == line
        daemon.answered()
    assert reader.readline() == b""


# A child reading its stdin as the shard process does, answering each line with its length.
_ECHO = """
from consumer import pipes
from consumer.lines import LineReader
daemon = pipes.take()
reader = LineReader(daemon.stdin)
while line := reader.readline():
    daemon.stdout.write(f"{len(line)}\\n")
    daemon.stdout.flush()
"""


def test_stdin_answers_each_line_as_the_pipe_gives_it() -> None:
    """Through a real pipe: a line whose end arrives in a short piece right after a long
    one (where a buffered reader's readinto1 would read again, and wait for ever) is
    answered. Each piece is written alone, with a pause, as the daemon's writes come."""
    with subprocess.Popen(
        [sys.executable, "-c", _ECHO],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            head = lines.FIRST_BUFFER_BYTES - 100
            pipe_bytes = 64 * 1024
            pieces = [b"x" * pipe_bytes] * (head // pipe_bytes) + [b"x" * (head % pipe_bytes)]
            for line_pieces in ([*pieces, b"y" * 2999 + b"\n"], [b"short\n"]):
                for piece in line_pieces:
                    os.write(child.stdin.fileno(), piece)
                    time.sleep(0.02)
                ready, _, _ = select.select([child.stdout], [], [], ANSWER_TIMEOUT_SECONDS)
                assert ready, "no answer: the reader waits for input the line does not need"
                assert int(child.stdout.readline()) == sum(map(len, line_pieces))
        finally:
            child.kill()


def test_a_line_is_returned_without_waiting_for_more() -> None:
    """A checkpoint answer is read as soon as the pipe has it: no read past its newline."""
    pipe = Pipe([b'{"action":"checkpoint"}\n', b"never read\n"])
    reader = LineReader(pipe)
    assert reader.readline() == b'{"action":"checkpoint"}\n'
    assert pipe.reads == 1


def test_streams_of_every_kind() -> None:
    """The shard process reads a FileIO (pipes.take()); the protocol tests, io.BytesIO."""
    data = b"first\n" + b"z" * (3 * lines.FIRST_BUFFER_BYTES) + b"\nlast"
    with tempfile.TemporaryFile() as file:
        file.write(data)
        file.seek(0)
        raw = io.FileIO(file.fileno(), "rb", closefd=False)
        for stream in (raw, io.BufferedReader(io.BytesIO(data)), io.BytesIO(data)):
            assert list(read_all(LineReader(stream))) == reference(data)


def test_a_non_blocking_stdin_is_an_error_not_eof() -> None:
    class NothingYet:
        def readinto(self, buffer: memoryview, /) -> int | None:  # noqa: ARG002 - the protocol's
            return None

    with pytest.raises(BlockingIOError):
        LineReader(NothingYet()).readline()


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
        def readinto(self, buffer: memoryview, /) -> int:
            if self.reads == 1:
                self.reads += 1
                raise OSError("interrupted")
            return super().readinto(buffer)

    data = b"ab" + b"c" * (6 * SMALL) + b"\nd\n"
    reader = LineReader(FailingOnce([data[:2], data[2:]]), first_buffer_bytes=SMALL)
    with pytest.raises(OSError, match="interrupted") as caught:
        reader.readline()
    assert caught.value.__traceback__ is not None  # the view is still referenced from here
    assert reader.readline() == data[: 6 * SMALL + 3]
    assert reader.readline() == b"d\n"
