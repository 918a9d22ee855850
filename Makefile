# The two set-up commands of the README:
#   make demo   the end-to-end encrypted Simple Query on a laptop, verified
#   make test   lint (ruff), types (mypy --strict) and the whole test suite
.PHONY: demo test lint bench clean

demo:
	@scripts/ensure-venv
	@scripts/ensure-java
	.venv/bin/cipherspark demo

# The bench extra too: the smoke tests run every benchmark on tiny sizes.
test:
	@scripts/ensure-venv test,bench
	@scripts/ensure-java
	@scripts/ensure-tools
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy
	.venv/bin/pytest

lint:
	@scripts/ensure-venv test
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

# The quick benchmark set (minutes); writes docs/benchmarks.md and docs/img/*.png.
bench:
	@scripts/ensure-venv test,bench
	@scripts/ensure-java
	.venv/bin/python bench/report.py

clean:
	rm -rf .venv demo .pytest_cache .mypy_cache .ruff_cache
