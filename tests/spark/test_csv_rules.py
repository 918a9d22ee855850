"""The CSV rules of the encrypted data source, without Spark: line ownership across splits,
partition planning, parsing in the three modes, and writing."""

from __future__ import annotations

import tempfile
from datetime import date
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherspark.crypto import (
    CONTENT_TYPE_CSV_NO_HEADER,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
)
from cipherspark.errors import InputError
from cipherspark.spark._csv import (
    FileSlice,
    csv_header_line,
    csv_rows,
    owned_chunks,
    owned_text,
    parse_csv,
    plan_slices,
)

DATA_KEY = bytes(range(32))
MIN_SEGMENT = 57  # 40-byte body header + 16-byte tag + 1 plaintext byte in segment 0


def make_container(path: Path, text: bytes, segment_size: int) -> ContainerFile:
    """Encrypt ``text`` to ``path`` under a fixed data key and open it for random access."""
    header = ContainerHeader(key_id="k", wrapped_key=b"wrapped", segment_size=segment_size,
                             content_type=CONTENT_TYPE_CSV_NO_HEADER)
    with open(path, "wb") as out:
        writer = EncryptingWriter(out, header, DATA_KEY)
        writer.write(text)
        writer.close()
    return ContainerFile(str(path), DATA_KEY)


def rule_owned(text: bytes, a: int, b: int) -> bytes:
    """Hadoop's rule, straight from its statement, on plaintext offsets ``[a, b)``."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == ord("\n")]
    owned = [s for s in starts if s < len(text) and ((s == 0 and a == 0) or a <= s - 1 < b)]
    if not owned:
        return b""
    last = owned[-1]
    end = text.find(b"\n", last)
    return text[owned[0] : len(text) if end < 0 else end + 1]


def plaintext_bounds(container: ContainerFile, text: bytes, start: int, stop: int) -> tuple[
    int, int
]:
    layout = container.layout
    a = min(layout.plaintext_offset(start), len(text))
    b = len(text) if stop >= container.segment_count else layout.plaintext_offset(stop)
    return a, b


def pieces(container: ContainerFile, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, container.segment_count]
    return [owned_text(container, s, e) for s, e in pairwise(bounds)]


# -- line ownership -------------------------------------------------------------------------------

LINE = st.text(alphabet='ab,"1 é', max_size=700).map(str.encode)
LINES = st.lists(st.one_of(st.just(b""), LINE), max_size=25)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES, trailing=st.booleans(), segment_size=st.integers(MIN_SEGMENT, 300),
       data=st.data())
def test_owned_text_over_all_splits_gives_back_the_text(
    lines: list[bytes], trailing: bool, segment_size: int, data: st.DataObject
) -> None:
    text = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    with tempfile.TemporaryDirectory() as tmp:
        container = make_container(Path(tmp) / "c", text, segment_size)
        count = container.segment_count
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, count - 1)), max_size=count))
                      - {count})
        got = pieces(container, cuts)
        assert b"".join(got) == text
        bounds = [0, *cuts, count]
        for (start, stop), piece in zip(pairwise(bounds), got, strict=True):
            a, b = plaintext_bounds(container, text, start, stop)
            assert piece == rule_owned(text, a, b)
            # Complete lines only: every piece ends at a newline unless it reaches the end.
            if piece and not text.endswith(piece):
                assert piece.endswith(b"\n")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES, trailing=st.booleans(), segment_size=st.integers(MIN_SEGMENT, 300),
       chunk=st.integers(1, 6), data=st.data())
def test_owned_chunks_are_the_split_in_whole_lines(
    lines: list[bytes], trailing: bool, segment_size: int, chunk: int, data: st.DataObject
) -> None:
    text = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    with tempfile.TemporaryDirectory() as tmp:
        container = make_container(Path(tmp) / "c", text, segment_size)
        count = container.segment_count
        start = data.draw(st.integers(0, max(0, count - 1)))
        stop = data.draw(st.integers(start + 1, count))
        chunks = list(owned_chunks(container, start, stop, chunk_segments=chunk))
        a, b = plaintext_bounds(container, text, start, stop)
        assert b"".join(chunks) == rule_owned(text, a, b)
        # Each chunk parses on its own: all but the last end with a newline, none is empty.
        assert all(c.endswith(b"\n") for c in chunks[:-1])
        assert all(chunks)


def test_empty_file_owns_nothing(tmp_path: Path) -> None:
    container = make_container(tmp_path / "c", b"", 100)
    assert container.segment_count == 1
    assert owned_text(container, 0, 1) == b""


def test_file_smaller_than_a_segment_is_one_piece(tmp_path: Path) -> None:
    text = b"name,age\nann,30\nbob,41"
    container = make_container(tmp_path / "c", text, 300)
    assert container.segment_count == 1
    assert owned_text(container, 0, 1) == text


def test_line_longer_than_several_segments(tmp_path: Path) -> None:
    long = b"x" * 1000
    text = b"a,1\n" + long + b"\nb,2\n"
    container = make_container(tmp_path / "c", text, 100)  # 44 bytes, then 84 per segment
    assert container.segment_count > 10
    # The first split owns the long line, read past its end; the middle splits own nothing.
    assert owned_text(container, 0, 1) == b"a,1\n" + long + b"\n"
    for start in range(1, 11):
        assert owned_text(container, start, start + 1) == b""
    got = pieces(container, list(range(1, container.segment_count)))
    assert b"".join(got) == text
    assert sum(1 for p in got if p) == 2


def test_split_boundary_exactly_after_a_newline(tmp_path: Path) -> None:
    first_size = 100 - 56  # plaintext bytes in segment 0 for 100-byte segments
    line1 = b"a" * (first_size - 1) + b"\n"  # its newline is segment 0's last byte
    line2 = b"b,2\n"
    line3 = b"c,3\n"
    container = make_container(tmp_path / "c", line1 + line2 + line3, 100)
    assert container.read_segments(0, 1) == line1
    # The newline at B-1 lies in split 0, so split 0 owns the line starting at B.
    assert owned_text(container, 0, 1) == line1 + line2
    assert owned_text(container, 1, container.segment_count) == line3


# -- partition planning ---------------------------------------------------------------------------

FILES = st.lists(
    st.tuples(st.integers(1, 40), st.integers(MIN_SEGMENT, 5000)), min_size=1, max_size=8
)


@settings(max_examples=300, deadline=None)
@given(files=FILES, target=st.integers(1, 50_000))
def test_plan_slices_covers_every_segment_once_and_respects_the_target(
    files: list[tuple[int, int]], target: int
) -> None:
    listing = [(f"f{i}", segments, size) for i, (segments, size) in enumerate(files)]
    sizes = {path: size for path, _, size in listing}
    partitions = plan_slices(listing, target)
    flat = [piece for partition in partitions for piece in partition]
    assert all(partitions)
    # In file order, each file cut into contiguous slices covering [0, segments) exactly once.
    for path, segments, _ in listing:
        mine = [p for p in flat if p.path == path]
        assert mine[0].start == 0
        assert mine[-1].stop == segments
        assert all(p.start < p.stop and p.segments == segments for p in mine)
        assert all(a.stop == b.start for a, b in pairwise(mine))
    assert [p.path for p in flat] == sorted((p.path for p in flat), key=lambda n: int(n[1:]))
    for number, partition in enumerate(partitions):
        total = sum((p.stop - p.start) * sizes[p.path] for p in partition)
        # Closed as soon as it reaches the target: without its last segment it was below.
        assert total - sizes[partition[-1].path] < target
        if number < len(partitions) - 1:
            assert total >= target


def test_plan_slices_cuts_a_large_file_at_the_target() -> None:
    mib = 1 << 20
    partitions = plan_slices([("big", 100, mib)], 32 * mib)
    assert [[(p.start, p.stop) for p in part] for part in partitions] == [
        [(0, 32)], [(32, 64)], [(64, 96)], [(96, 100)]
    ]


def test_plan_slices_packs_small_files_together() -> None:
    files = [(f"part-{i}", 1, 1000) for i in range(10)]
    partitions = plan_slices(files, 32 << 20)
    assert partitions == [[FileSlice(f"part-{i}", 0, 1, 1) for i in range(10)]]
    assert len(plan_slices(files, 3000)) == 4  # 3 + 3 + 3 + 1


# -- parsing --------------------------------------------------------------------------------------

PEOPLE = pa.schema([("name", pa.string()), ("age", pa.int32()), ("job", pa.string())])


def test_parse_csv_types() -> None:
    schema = pa.schema([("name", pa.string()), ("age", pa.int32()), ("score", pa.float64()),
                        ("ok", pa.bool_()), ("day", pa.date32()), ("big", pa.int64())])
    table = parse_csv(b"ann,30,1.5,true,2024-01-02,9000000000\nbob,-4,2,FALSE,2023-12-31,1\n",
                      schema, "FAILFAST")
    assert table.schema == schema
    assert table.to_pylist() == [
        {"name": "ann", "age": 30, "score": 1.5, "ok": True, "day": date(2024, 1, 2),
         "big": 9_000_000_000},
        {"name": "bob", "age": -4, "score": 2.0, "ok": False, "day": date(2023, 12, 31),
         "big": 1},
    ]


def test_parse_csv_empty_field_is_null() -> None:
    table = parse_csv(b",30,Developer\nann,,\n", PEOPLE, "FAILFAST")
    assert table.to_pylist() == [
        {"name": None, "age": 30, "job": "Developer"},
        {"name": "ann", "age": None, "job": None},
    ]


def test_parse_csv_quoted_fields() -> None:
    text = b'"smith, john",41,"says ""hi"", twice"\n"",1,plain\n'
    assert parse_csv(text, PEOPLE, "FAILFAST").to_pylist() == [
        {"name": "smith, john", "age": 41, "job": 'says "hi", twice'},
        # Spark 4.1 reads a quoted empty field as null too (measured, even for its own output).
        {"name": None, "age": 1, "job": "plain"},
    ]


def test_parse_csv_empty_text_is_an_empty_table() -> None:
    for text in (b"", b"\n", b"  \n"):
        table = parse_csv(text, PEOPLE, "FAILFAST")
        assert table.num_rows == 0 and table.schema == PEOPLE


@pytest.mark.parametrize("bad", [b"bob,7\n", b"bob,seven,Engineer\n", b"bob,7,Engineer,x\n"])
def test_parse_csv_failfast_raises_input_error(bad: bytes) -> None:
    with pytest.raises(InputError, match="FAILFAST"):
        parse_csv(b"ann,30,Developer\n" + bad, PEOPLE, "FAILFAST")


def test_parse_csv_permissive_repairs_rows() -> None:
    text = b"ann,30,Developer\nbob\ncid,old,Engineer\ndan,5,Researcher,extra\n"
    assert parse_csv(text, PEOPLE, "PERMISSIVE").to_pylist() == [
        {"name": "ann", "age": 30, "job": "Developer"},
        {"name": "bob", "age": None, "job": None},  # short row padded with nulls
        {"name": "cid", "age": None, "job": "Engineer"},  # unparseable int -> null
        {"name": "dan", "age": 5, "job": "Researcher"},  # extra field dropped
    ]


def test_parse_csv_permissive_int_out_of_range_is_null() -> None:
    text = b"ann,30,Developer\nbob,99999999999,Engineer\n"
    assert parse_csv(text, PEOPLE, "PERMISSIVE").column("age").to_pylist() == [30, None]


def test_parse_csv_dropmalformed_drops_rows() -> None:
    text = (b"ann,30,Developer\nbob\ncid,old,Engineer\ndan,5,Researcher,extra\n"
            b"eve,,Engineer\n")
    assert parse_csv(text, PEOPLE, "DROPMALFORMED").to_pylist() == [
        {"name": "ann", "age": 30, "job": "Developer"},
        {"name": "eve", "age": None, "job": "Engineer"},  # a null is not malformed
    ]


# -- writing --------------------------------------------------------------------------------------


def test_csv_rows_leaves_plain_values_unquoted() -> None:
    table = pa.table({"name": ["ann", None], "age": pa.array([30, None], pa.int32()),
                      "job": ["Developer", "Engineer"]})
    assert csv_rows(table) == b"ann,30,Developer\n,,Engineer\n"


def test_csv_rows_quotes_values_that_need_it() -> None:
    table = pa.table({"name": ['smith, john', 'say "hi"', ""],
                      "age": pa.array([1, 2, 3], pa.int32())})
    out = csv_rows(table)
    assert out.splitlines()[0].startswith(b'"smith, john",')
    assert b'"say ""hi"""' in out
    assert b'""' in out.splitlines()[2]
    assert b'"1"' not in out and b'"2"' not in out  # numbers are never quoted
    # What Spark's CSV reader makes of it: the empty string reads back as null, as in Spark.
    expected = table.set_column(0, "name", pa.array(['smith, john', 'say "hi"', None]))
    assert parse_csv(out, table.schema, "FAILFAST").equals(expected)


def test_csv_rows_of_a_record_batch_and_of_nothing() -> None:
    batch = pa.record_batch({"a": pa.array(["x"]), "b": pa.array([1], pa.int32())})
    assert csv_rows(batch) == b"x,1\n"
    assert csv_rows(batch.slice(0, 0)) == b""


def test_csv_header_line_quotes_only_where_needed() -> None:
    assert csv_header_line(["name", "age"]) == b"name,age\n"
    assert csv_header_line(["a,b", 'say "x"', "c"]) == b'"a,b","say ""x""",c\n'


NEWLINE_FREE = st.text(st.characters(blacklist_categories=("Cs",),  # type: ignore[arg-type]
                                     blacklist_characters="\r\n"), max_size=12)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.one_of(st.none(), NEWLINE_FREE),
                               st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
                               st.one_of(st.none(), NEWLINE_FREE)), max_size=20))
def test_csv_rows_round_trips_through_parse_csv(
    rows: list[tuple[str | None, int | None, str | None]]
) -> None:
    schema = pa.schema([("s", pa.string()), ("n", pa.int32()), ("t", pa.string())])
    table = pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows],
                                 schema=schema)
    out = csv_rows(table)
    assert out.count(b"\n") == len(rows)
    back = parse_csv(out, schema, "FAILFAST")
    # Written as Spark writes them (null -> empty, "" -> '""'); read as Spark reads them: both
    # come back null (Spark 4.1.4 reads its own '""' as null; tests/spark/test_differential.py).
    expected = [{k: (None if v == "" else v) for k, v in row.items()} for row in table.to_pylist()]
    assert back.to_pylist() == expected
