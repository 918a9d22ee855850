"""The text and JSON Lines rules of the encrypted data source, without Spark: whatever the
segment size and however the segments are cut into splits, the lines the splits give, in order,
are the file's lines as Hadoop's ``LineReader`` cuts the whole file (``\\n``, ``\\r\\n``, a lone
``\\r``; invalid UTF-8 as U+FFFD), each exactly once. JSON Lines records are those lines, so a
JSON document is never cut or read twice at a segment boundary."""

from __future__ import annotations

import re
import tempfile
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherspark.spark._csv import owned_chunks
from cipherspark.spark.datasource import _split_lines
from tests.spark.test_csv_rules import MIN_SEGMENT, make_container


def hadoop_lines(text: bytes) -> list[str]:
    """Hadoop's rule from its statement, independently of the reader's code: a line ends at
    CR LF, LF or CR; a final line end starts no empty line."""
    decoded = text.decode("utf-8", errors="replace")
    lines = re.split(r"\r\n|\n|\r", decoded)
    return lines[:-1] if lines and lines[-1] == "" else lines


# Line ends of every kind, multi-byte characters, invalid UTF-8, JSON punctuation.
PIECE = st.sampled_from(
    [b"a", b"{", b"}", b'"', b":", b" ", b"\xc3\xa9", b"\xe6\x97\xa5", b"\xff", b"\xc3", b"\n",
     b"\r\n", b"\r", b"\n\n", b"\\", b"1"]
)  # fmt: skip
TEXT = st.lists(PIECE, max_size=400).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, segment_size=st.integers(MIN_SEGMENT, 200), data=st.data())
def test_the_splits_lines_are_the_file_s_lines(
    text: bytes, segment_size: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        container = make_container(Path(tmp) / "c", text, segment_size)
        count = container.segment_count
        cuts = sorted(
            data.draw(st.sets(st.integers(1, max(1, count - 1)), max_size=count)) - {count}
        )
        chunk = data.draw(st.integers(1, 4))
        got: list[str] = []
        for start, stop in pairwise([0, *cuts, count]):
            for piece in owned_chunks(container, start, stop, chunk_segments=chunk):
                got += _split_lines(piece)
        assert got == hadoop_lines(text)


def test_the_rule_itself() -> None:
    # The reference above, on the cases that matter, so that it cannot drift into the code's.
    assert hadoop_lines(b"") == []
    assert hadoop_lines(b"a") == ["a"]
    assert hadoop_lines(b"a\n") == ["a"]
    assert hadoop_lines(b"a\r\n\rb\n\n") == ["a", "", "b", ""]
    assert hadoop_lines(b"\xff\n") == ["\ufffd"]
    # Not str.splitlines: U+2028 and a form feed are no line ends for Hadoop.
    assert hadoop_lines("x\u2028y\x0c".encode()) == ["x\u2028y\x0c"]
