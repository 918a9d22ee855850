"""cipherspark: Apache Spark analytics end to end on encrypted data.

The high-level pieces: :mod:`cipherspark.kms` (keys), :mod:`cipherspark.files` (encrypt and
decrypt files), :mod:`cipherspark.spark` (a secure SparkSession and the ``cipherspark_csv`` data
source), :mod:`cipherspark.jobs` (the Simple Query, SQL, the demo).
Errors: :mod:`cipherspark.errors`.
"""

from cipherspark.errors import CipherSparkError

__all__ = ["CipherSparkError", "__version__"]


def __getattr__(name: str) -> str:
    # importlib.metadata costs ~70 ms to import on Python 3.11 (cProfile of `cipherspark --help`),
    # and every cipherspark process imports this package: read the version only when asked.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        # One source for the version: pyproject.toml, through the installed distribution's metadata.
        return version("cipherspark")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        return "0+unknown"
