"""The people.csv generator: format, ranges, ground truth, determinism, distribution."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest

from cipherspark.errors import InputError, OutputExistsError
from cipherspark.jobs import datagen
from cipherspark.jobs.datagen import HEADER, JOBS, generate_people

ROW = re.compile(rb"[a-z]{3,7},(1[89]|[2-5][0-9]|60),(Developer|Engineer|Researcher)\n")
SEED = 20240611


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[datagen.GeneratedPeople, bytes]:
    """60,000 rows with a fixed seed, shared by the read-only tests."""
    path = tmp_path_factory.mktemp("people") / "people.csv"
    result = generate_people(path, 60_000, seed=SEED)
    return result, path.read_bytes()


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(data.decode("ascii").splitlines()))


def test_header_and_every_row_match_the_format(
    sample: tuple[datagen.GeneratedPeople, bytes],
) -> None:
    result, data = sample
    assert data.startswith(b"name,age,job\n")
    assert data.endswith(b"\n")
    lines = data.splitlines(keepends=True)
    assert lines[0] == HEADER
    assert len(lines) == 1 + 60_000
    bad = [line for line in lines[1:] if not ROW.fullmatch(line)]
    assert bad == []
    assert result.rows == 60_000
    assert result.size == len(data)
    assert result.path.name == "people.csv"


def test_names_ages_jobs_cover_their_ranges(
    sample: tuple[datagen.GeneratedPeople, bytes],
) -> None:
    rows = _rows(sample[1])
    lengths = Counter(len(r["name"]) for r in rows)
    assert set(lengths) == {3, 4, 5, 6, 7}
    assert all(r["name"].isascii() and r["name"].isalpha() and r["name"].islower()
               for r in rows)
    letters = Counter("".join(r["name"] for r in rows))
    assert set(letters) == set("abcdefghijklmnopqrstuvwxyz")
    ages = Counter(int(r["age"]) for r in rows)
    assert min(ages) == 18
    assert max(ages) == 60
    assert set(ages) == set(range(18, 61))
    assert set(Counter(r["job"] for r in rows)) == set(JOBS)


def test_ground_truth_matches_an_independent_count(
    sample: tuple[datagen.GeneratedPeople, bytes],
) -> None:
    result, data = sample
    expected = sum(1 for r in _rows(data)
                   if r["job"] == "Developer" and 20 <= int(r["age"]) <= 40)
    assert result.developers_20_40 == expected
    # About 1/3 of jobs times 21/43 of ages.
    assert 0.9 < expected / (60_000 / 3 * 21 / 43) < 1.1


def _chi_square(counts: Counter[object], categories: list[object]) -> float:
    total = sum(counts.values())
    expected = total / len(categories)
    assert set(counts) <= set(categories)
    return sum((counts.get(c, 0) - expected) ** 2 / expected for c in categories)


def _loose_bound(df: int) -> float:
    """Far above the chi-square 99.99th percentile for ``df`` degrees of freedom."""
    return df + 6 * (2 * df) ** 0.5 + 10


def test_distributions_are_roughly_uniform(
    sample: tuple[datagen.GeneratedPeople, bytes],
) -> None:
    rows = _rows(sample[1])
    checks: list[tuple[Counter[object], list[object]]] = [
        (Counter(int(r["age"]) for r in rows), list(range(18, 61))),
        (Counter(r["job"] for r in rows), list(JOBS)),
        (Counter(len(r["name"]) for r in rows), [3, 4, 5, 6, 7]),
        (Counter("".join(r["name"] for r in rows)), list("abcdefghijklmnopqrstuvwxyz")),
        (Counter(r["name"][0] for r in rows), list("abcdefghijklmnopqrstuvwxyz")),
    ]
    for counts, categories in checks:
        assert _chi_square(counts, categories) < _loose_bound(len(categories) - 1), categories
    # Age and job are independent: Developers are about a third at every age band.
    by_band = Counter((int(r["age"]) // 10, r["job"] == "Developer") for r in rows)
    for band in range(2, 6):
        share = by_band[(band, True)] / (by_band[(band, True)] + by_band[(band, False)])
        assert 0.3 < share < 0.37, band


def test_chi_square_check_detects_skew() -> None:
    """The bound used above rejects a 5% excess in one of three jobs."""
    skewed: Counter[object] = Counter({job: 20_000 for job in JOBS})
    skewed["Developer"] += 1_000
    assert _chi_square(skewed, list(JOBS)) > _loose_bound(2)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate_people(tmp_path / "a.csv", 5_000, seed=42)
    b = generate_people(tmp_path / "b.csv", 5_000, seed=42)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert a.developers_20_40 == b.developers_20_40
    assert a.size == b.size


def test_different_seed_different_bytes(tmp_path: Path) -> None:
    generate_people(tmp_path / "a.csv", 5_000, seed=1)
    generate_people(tmp_path / "b.csv", 5_000, seed=2)
    generate_people(tmp_path / "c.csv", 5_000)
    generate_people(tmp_path / "d.csv", 5_000)
    contents = {(tmp_path / f"{n}.csv").read_bytes() for n in "abcd"}
    assert len(contents) == 4


def test_zero_rows_is_header_only(tmp_path: Path) -> None:
    result = generate_people(tmp_path / "p.csv", 0, seed=1)
    assert (tmp_path / "p.csv").read_bytes() == b"name,age,job\n"
    assert result.rows == 0
    assert result.developers_20_40 == 0
    assert result.size == len(b"name,age,job\n")


def test_negative_rows_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_people(tmp_path / "p.csv", -1)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"precious\n")
    with pytest.raises(OutputExistsError):
        generate_people(path, 100, seed=1)
    assert path.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"old\n")
    result = generate_people(path, 100, seed=1, overwrite=True)
    data = path.read_bytes()
    assert data.startswith(HEADER)
    assert len(data.splitlines()) == 101
    assert result.size == len(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv"]


def test_missing_output_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        generate_people(tmp_path / "absent" / "p.csv", 10)
    assert list(tmp_path.iterdir()) == []


def test_chunked_generation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across chunk boundaries the rows, counts, size and progress stay right."""
    monkeypatch.setattr(datagen, "_CHUNK_ROWS", 777)
    calls: list[int] = []
    result = generate_people(tmp_path / "p.csv", 5_000, seed=3, progress=calls.append)
    data = (tmp_path / "p.csv").read_bytes()
    lines = data.splitlines(keepends=True)
    assert lines[0] == HEADER
    assert len(lines) == 5_001
    assert all(ROW.fullmatch(line) for line in lines[1:])
    assert calls == [777] * 6 + [5_000 - 6 * 777]
    assert result.size == len(data)
    expected = sum(1 for r in _rows(data)
                   if r["job"] == "Developer" and 20 <= int(r["age"]) <= 40)
    assert result.developers_20_40 == expected
