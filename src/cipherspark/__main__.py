"""``python -m cipherspark``: the ``cipherspark`` command (see :mod:`cipherspark.cli`)."""

from cipherspark.cli import run

if __name__ == "__main__":
    run()
