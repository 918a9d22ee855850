# The two set-up commands of the README:
#   make demo   the end-to-end encrypted Simple Query on a laptop, verified
#   make test   lint (ruff), types (mypy --strict) and the whole test suite
# And for developers:
#   make lint       ruff check, ruff format --check, mypy (src strict, tests relaxed)
#   make test-fast  the tests that start no Spark session and no server process (about a minute)
#   make nightly    the differential suite with 400 examples per property
#   make bench      the quick benchmark set
# Every Spark target builds the Parquet KMS client first (scripts/build-java: java/ into
# build/java/cipherspark-pme.jar, skipped when up to date; needs javac, which ensure-java installs).
.PHONY: demo test test-fast nightly lint bench clean

# The server extra too, so that the README's 'cipherspark kms serve' works in the same .venv.
demo:
	@scripts/ensure-venv server
	@scripts/ensure-java
	@scripts/build-java
	.venv/bin/cipherspark demo

# The test extra includes the server extra; the bench extra too: the smoke tests run every
# benchmark on tiny sizes. The suite runs in TEST_WORKERS pytest-xdist workers, one test file per
# worker at a time (--dist loadfile: a file's module fixtures, e.g. the chain proof's cluster,
# start once). Most of the suite waits on JVMs, servers and clusters starting (measured serially:
# about 5 minutes of CPU in 13 minutes of wall time), so 3 workers on 2 cores keeps both busy.
# --no-loadscope-reorder: xdist would otherwise hand out files by their number of tests, most
# first, which put the 2-test chain proof (the longest file) last; tests/conftest.py orders the
# files longest first instead (LONGEST_FIRST).
TEST_WORKERS ?= 3
# scripts/ensure-spark-cds: a class-data-sharing archive of Spark's classes for the suite's driver
# JVMs (tests/conftest.py uses it when present): about 4 s of CPU less per Spark start.
test:
	@scripts/ensure-venv test,bench
	@scripts/ensure-java
	@scripts/build-java
	@scripts/ensure-tools
	@scripts/ensure-spark-cds >/dev/null
	.venv/bin/ruff check src tests bench examples
	.venv/bin/mypy
	.venv/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# mypy's files and settings are in pyproject.toml: src strictly, tests with relaxed settings.
# 'ruff format --check' comes last so the other checks still report while the tree is not yet
# formatted; make test does not run it.
lint:
	@scripts/ensure-venv test
	.venv/bin/ruff check src tests bench examples
	.venv/bin/mypy
	.venv/bin/ruff format --check src tests bench examples

# No Spark (marker spark) and no KMS server or benchmark child processes (marker servers).
test-fast:
	@scripts/ensure-venv test
	.venv/bin/pytest -m "not spark and not servers"

# The differential suite (reader vs Spark's own CSV reader) with ten times the generated
# queries (about 5 minutes for them alone here); each test may take up to 30 minutes.
nightly:
	@scripts/ensure-venv test
	@scripts/ensure-java
	@scripts/build-java
	@scripts/ensure-spark-cds >/dev/null
	CIPHERSPARK_DIFFERENTIAL_EXAMPLES=400 .venv/bin/pytest --timeout=1800 tests/spark/test_differential.py

# The quick benchmark set (minutes); writes docs/benchmarks.md and docs/img/*.png.
bench:
	@scripts/ensure-venv test,bench
	@scripts/ensure-java
	@scripts/build-java
	.venv/bin/python bench/report.py

clean:
	rm -rf .venv demo .pytest_cache .mypy_cache .ruff_cache build/java build/spark-cds
