"""The daemon's lines on stdin, read into one reused buffer.

A ``processRecords`` line of 10,000 records is some 7.4 MB. ``BufferedReader.readline``
reads such a line 8 KiB at a time, keeps the pieces and joins them: about 13-26 ms of
CPU per line on the benchmark's machine, 1.3-2.6 µs per record, most of it faulting in
the fresh memory of the pieces and of the joined line. :class:`LineReader` reads the
pipe straight into a buffer kept at the longest line's size, where the line is decoded
(:meth:`LineReader.readline_in_place`) or from which it is copied out once: 6-8 ms.

It never waits for input a line does not need: the daemon writes one line and waits for
the answer, so a read that waits for more would wait forever. It reads only while it
holds no whole line, and the pipe is read by its file descriptor
(:func:`consumer.pipes.take`), where one read returns what the pipe has. Not through
``sys.stdin.buffer``: its ``readinto1``, asked for more than its own buffer while
holding a few bytes, returns them only after one more read of the pipe, which blocks
when those bytes end the line.

Memory: the buffer stays as large as the longest line so far (up to
:data:`MAX_KEPT_BYTES`) between messages: some 8 MiB after a 10,000-record line. Decoded
where it lies, a line costs the buffer alone, where ``readline`` held the line and,
while reading it, its pieces.
"""

from __future__ import annotations

from typing import Protocol

# The first buffer, and how much one read asks for when the buffer is empty: a pipe
# gives at most its capacity (64 KiB on Linux) per read anyway.
FIRST_BUFFER_BYTES = 1024 * 1024
# A buffer grown past this is given back once empty, so that one outsized line does not
# cost its memory for the rest of the process's life. A GetRecords call returns at most
# 10 MB, some 14 MB as the daemon writes it (base64, each record's fields): most lines
# fit; a larger one (many small deaggregated KPL records, long escaped keys) is read as
# well, in a buffer that is then dropped.
MAX_KEPT_BYTES = 16 * 1024 * 1024
_NEWLINE = b"\n"


class Readable(Protocol):
    """What a line reader needs of its input: an ``io.FileIO``, or ``io.BytesIO`` in tests."""

    def readinto(self, buffer: memoryview, /) -> int | None:
        """Read at most ``len(buffer)`` bytes, no more than are there; 0 at EOF."""


class LineReader:
    """``stream``'s lines as ``bytes``, each ending in a newline but perhaps the last.

    ``readline`` returns what ``BufferedReader.readline`` returns for the same input:
    each line with its newline, the rest before EOF without one, then ``b""``.
    """

    def __init__(self, stream: Readable, *, first_buffer_bytes: int = FIRST_BUFFER_BYTES) -> None:
        """Read ``stream`` from where it is; nothing is read until the first line is asked for."""
        self._stream = stream
        self._first_buffer_bytes = first_buffer_bytes
        self._buffer = bytearray(first_buffer_bytes)
        self._start = 0  # the first byte not yet returned
        self._end = 0  # after the last byte read
        self._eof = False

    @property
    def buffer_bytes(self) -> int:
        """The size of the buffer now: the longest line so far, rounded up to a doubling."""
        return len(self._buffer)

    def readline(self) -> bytes:
        """The next line, with its newline; at EOF the rest, then ``b""``."""
        buffer, start, stop = self.readline_in_place()
        with memoryview(buffer) as view:
            return bytes(view[start:stop])

    def readline_in_place(self) -> tuple[bytearray, int, int]:
        """The next line where it lies, ``buffer[start:stop]``, not copied out.

        What :meth:`readline` returns, without its copy (7 MB for a 10,000-record line).
        Valid until this reader reads again: the next read may move or overwrite those
        bytes. ``start == stop`` at EOF.
        """
        scanned = 0  # bytes after _start known to hold no newline
        while True:
            newline = self._buffer.find(_NEWLINE, self._start + scanned, self._end)
            if newline >= 0:
                return self._take(newline + 1)
            scanned = self._end - self._start
            if self._eof or not self._read():
                return self._take(self._end)

    def _take(self, stop: int) -> tuple[bytearray, int, int]:
        """The bytes from the start to ``stop``, as returned; the next line starts at ``stop``."""
        taken = (self._buffer, self._start, stop)
        self._start = stop
        if self._start == self._end:
            # Nothing held: the next read starts at the front (overwriting what was taken).
            self._start = self._end = 0
            if len(self._buffer) > MAX_KEPT_BYTES:
                self._buffer = bytearray(self._first_buffer_bytes)
        return taken

    def _read(self) -> bool:
        """Read more of the stream after what is held; False at EOF."""
        if self._end == len(self._buffer):
            self._make_room()
        with memoryview(self._buffer) as view:
            count = self._stream.readinto(view[self._end :])
        if count is None:  # only a non-blocking file says "nothing yet"; stdin blocks
            raise BlockingIOError("stdin is in non-blocking mode")
        if not count:
            self._eof = True
            return False
        self._end += count
        return True

    def _make_room(self) -> None:
        """Move what is held to the front, or into a buffer twice as large if it is full.

        Never resized in place: a bytearray cannot be while a view of it is alive (one
        left in a traceback, say), and a new one costs the same copy.
        """
        held = self._end - self._start
        if held <= len(self._buffer) // 2:
            self._buffer[:held] = self._buffer[self._start : self._end]
        else:
            larger = bytearray(2 * len(self._buffer))
            larger[:held] = self._buffer[self._start : self._end]
            self._buffer = larger
        self._start, self._end = 0, held
