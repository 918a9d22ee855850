"""cipherspark: Apache Spark analytics end to end on encrypted data.

The high-level pieces: :mod:`cipherspark.kms` (keys), :mod:`cipherspark.files` (encrypt and
decrypt files), :mod:`cipherspark.spark` (a secure SparkSession and the ``cipherspark_csv`` data
source), :mod:`cipherspark.jobs` (the Simple Query, SQL, the demo).
Errors: :mod:`cipherspark.errors`.
"""

from importlib.metadata import PackageNotFoundError, version

from cipherspark.errors import CipherSparkError

__all__ = ["CipherSparkError", "__version__"]

try:
    # One source for the version: pyproject.toml, through the installed distribution's metadata.
    __version__ = version("cipherspark")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
