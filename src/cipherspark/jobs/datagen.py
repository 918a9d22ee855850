"""The ``people.csv`` generator of the reference Simple Query, vectorised with NumPy.

Rows are ``name,age,job``: a name of 3-7 random lowercase letters, an age uniform in 18..60
inclusive, a job uniform over Developer / Engineer / Researcher. The same seed gives the same bytes
(NumPy's PCG64 stream is stable across platforms). The generator also returns the Simple Query's
ground truth: the number of Developers aged 20 to 40 inclusive.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cipherspark._atomic import atomic_output

__all__ = ["HEADER", "JOBS", "GeneratedPeople", "generate_people"]

HEADER = b"name,age,job\n"
JOBS = ("Developer", "Engineer", "Researcher")
MIN_AGE, MAX_AGE = 18, 60
MIN_NAME, MAX_NAME = 3, 7
QUERY_MIN_AGE, QUERY_MAX_AGE = 20, 40
_CHUNK_ROWS = 1_000_000

# One row in a fixed-width byte matrix: name(7) ',' age(2) ',' job(10) '\n' = 22 columns; bytes
# outside each row's name / job length are masked out and the matrix is flattened row-major.
_NAME_COL, _AGE_COL, _JOB_COL = 0, MAX_NAME + 1, MAX_NAME + 4
_WIDTH = _JOB_COL + max(len(j) for j in JOBS) + 1


@dataclass(frozen=True)
class GeneratedPeople:
    """What :func:`generate_people` wrote."""

    path: Path
    rows: int
    developers_20_40: int
    size: int


def _chunk(rng: np.random.Generator, rows: int) -> tuple[bytes, int]:
    name_len = rng.integers(MIN_NAME, MAX_NAME + 1, size=rows, dtype=np.int8)
    letters = rng.integers(ord("a"), ord("z") + 1, size=(rows, MAX_NAME), dtype=np.uint8)
    age = rng.integers(MIN_AGE, MAX_AGE + 1, size=rows, dtype=np.int8)
    job = rng.integers(0, len(JOBS), size=rows, dtype=np.int8)

    matrix = np.zeros((rows, _WIDTH), dtype=np.uint8)
    mask = np.zeros((rows, _WIDTH), dtype=bool)
    matrix[:, :MAX_NAME] = letters
    mask[:, :MAX_NAME] = np.arange(MAX_NAME) < name_len[:, None]
    matrix[:, MAX_NAME] = ord(",")
    matrix[:, _AGE_COL] = ord("0") + age // 10
    matrix[:, _AGE_COL + 1] = ord("0") + age % 10
    matrix[:, _AGE_COL + 2] = ord(",")
    mask[:, MAX_NAME:_JOB_COL] = True
    job_bytes = np.zeros((len(JOBS), _WIDTH - 1 - _JOB_COL), dtype=np.uint8)
    job_len = np.array([len(j) for j in JOBS], dtype=np.int8)
    for i, name in enumerate(JOBS):
        job_bytes[i, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
    matrix[:, _JOB_COL:-1] = job_bytes[job]
    mask[:, _JOB_COL:-1] = np.arange(_WIDTH - 1 - _JOB_COL) < job_len[job][:, None]
    matrix[:, -1] = ord("\n")
    mask[:, -1] = True
    developers = int(np.count_nonzero((job == 0) & (age >= QUERY_MIN_AGE) & (age <= QUERY_MAX_AGE)))
    return matrix[mask].tobytes(), developers


def generate_people(
    path: str | os.PathLike[str],
    rows: int,
    *,
    seed: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> GeneratedPeople:
    """Write ``rows`` random people to ``path`` atomically and return the ground truth.

    ``progress`` is called with the number of rows written after each chunk.
    """
    if rows < 0:
        raise ValueError("rows must be non-negative")
    rng = np.random.default_rng(seed)
    developers = 0
    size = 0
    with atomic_output(Path(path), overwrite=overwrite) as f:
        f.write(HEADER)
        size += len(HEADER)
        for start in range(0, rows, _CHUNK_ROWS):
            count = min(_CHUNK_ROWS, rows - start)
            data, devs = _chunk(rng, count)
            f.write(data)
            size += len(data)
            developers += devs
            if progress is not None:
                progress(count)
    return GeneratedPeople(Path(path), rows, developers, size)
