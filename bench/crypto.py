"""Container encryption and decryption throughput vs ``openssl speed -evp aes-256-gcm``.

Everything is measured in one run, alternating, and reported as medians:

* openssl: ``openssl speed -evp aes-256-gcm`` at 16 KiB blocks (its largest default block: the
  machine's AES-256-GCM figure), on one core and with ``-multi`` on all cores;
* memory: cipherspark's EncryptingWriter into a discarding sink, ``decrypt_stream`` from an
  in-memory container and ``ContainerFile.read_segments`` (the Spark read path), per segment size;
* file: ``encrypt_path`` / ``decrypt_path`` file to file (the input is in the page cache, the
  output goes to the page cache; a local file KMS unwraps the data key);
* all cores: one process per core, each encrypting / decrypting its own buffer in memory.

The last line is ``decrypt/openssl: X.XX``: in-memory ``decrypt_stream`` at 1 MiB segments over
openssl's single-core figure.

    .venv/bin/python bench/crypto.py --mib 256
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cipherspark.crypto import ContainerFile, ContainerHeader, EncryptingWriter, decrypt_stream
from cipherspark.files import decrypt_path, encrypt_path
from cipherspark.kms import Credentials, open_kms

SEGMENT_SIZES = (256 << 10, 1 << 20, 4 << 20)
DEFAULT_SEGMENT = 1 << 20
_CHUNK = 1 << 20


def openssl_speed(cores: int = 1, seconds: int = 1) -> float | None:
    """MB/s of ``openssl speed -evp aes-256-gcm`` at 16 KiB blocks, or None without openssl."""
    if shutil.which("openssl") is None:
        return None
    command = ["openssl", "speed", "-seconds", str(seconds), "-bytes", "16384"]
    if cores > 1:
        command += ["-multi", str(cores)]
    out = subprocess.run(
        [*command, "-evp", "aes-256-gcm"], capture_output=True, text=True, check=True
    ).stdout
    lines = [ln for ln in out.splitlines() if ln.lower().startswith(("aes-256-gcm", "evp"))]
    kbytes = float(re.findall(r"([\d.]+)k", lines[-1])[-1])
    return kbytes * 1000 / 1e6


class _Discard:
    """A sink that drops what is written (keeping it would measure page faults, not AES)."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)


def _encrypt_memory(plaintext: bytes, key: bytes, segment_size: int) -> float:
    header = ContainerHeader("bench", b"\x01" * 61, segment_size)
    view = memoryview(plaintext)
    start = time.perf_counter()
    writer = EncryptingWriter(_Discard(), header, key)  # type: ignore[arg-type]
    for offset in range(0, len(plaintext), _CHUNK):
        writer.write(view[offset : offset + _CHUNK])
    writer.close()
    return time.perf_counter() - start


def _container(plaintext: bytes, key: bytes, segment_size: int) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, ContainerHeader("bench", b"\x01" * 61, segment_size), key)
    writer.write(plaintext)
    writer.close()
    return sink.getvalue()


def _decrypt_memory(container: bytes, key: bytes, size: int) -> float:
    stream = io.BytesIO(container)
    start = time.perf_counter()
    total = sum(len(chunk) for chunk in decrypt_stream(stream, lambda _h: key))
    elapsed = time.perf_counter() - start
    assert total == size
    return elapsed


def _read_segments(path: Path, key: bytes, size: int) -> float:
    """The Spark read path: ``read_segments`` over 32 MiB splits of a page-cached file."""
    start = time.perf_counter()
    container = ContainerFile(str(path), key)
    step = max(1, (32 << 20) // container.header.segment_size)
    total = 0
    for first in range(0, container.segment_count, step):
        total += len(container.read_segments(first, first + step))
    elapsed = time.perf_counter() - start
    assert total == size
    return elapsed


def _core_job(args: tuple[int, int, int]) -> tuple[float, float]:
    """One process of the all-cores run: (encrypt s, decrypt s) of its own buffer."""
    size, segment_size, repeats = args
    plaintext, key = os.urandom(size), os.urandom(32)
    container = _container(plaintext, key, segment_size)
    enc = min(_encrypt_memory(plaintext, key, segment_size) for _ in range(repeats))
    dec = min(_decrypt_memory(container, key, size) for _ in range(repeats))
    return enc, dec


def _all_cores(size: int, cores: int) -> tuple[float, float]:
    """Aggregate (encrypt MB/s, decrypt MB/s) of ``cores`` processes working at once."""
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        results = pool.map(_core_job, [(size, DEFAULT_SEGMENT, 2)] * cores)
    # Each process times its own work; the aggregate is the sum of per-process rates.
    return (
        sum(size / enc for enc, _ in results) / 1e6,
        sum(size / dec for _, dec in results) / 1e6,
    )


def _median_rate(times: list[float], size: int) -> float:
    return size / statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="plaintext size per measurement")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs")
    parser.add_argument("--openssl-seconds", type=int, default=1)
    args = parser.parse_args()
    runs = max(1, args.runs)
    size = args.mib << 20
    cores = os.cpu_count() or 1
    plaintext, key = os.urandom(size), os.urandom(32)
    containers = {s: _container(plaintext, key, s) for s in SEGMENT_SIZES}

    workdir = Path(tempfile.mkdtemp(prefix="cipherspark-crypto-"))
    try:
        credentials = Credentials("bench-app", "bench-api-key-throwaway-keystore")
        kms = open_kms((workdir / "kms").as_uri(), credentials, create=True)
        kms.create_key("bench")
        plain_file = workdir / "plain.bin"
        plain_file.write_bytes(plaintext)
        enc_file = workdir / "plain.bin.cspk"
        dec_file = workdir / "decrypted.bin"
        seg_file = workdir / "segments.cspk"
        seg_file.write_bytes(containers[DEFAULT_SEGMENT])

        def file_encrypt() -> float:
            start = time.perf_counter()
            encrypt_path(plain_file, enc_file, kms, "bench", overwrite=True)
            return time.perf_counter() - start

        def file_decrypt() -> float:
            start = time.perf_counter()
            decrypt_path(enc_file, dec_file, kms, overwrite=True)
            return time.perf_counter() - start

        file_encrypt()
        file_decrypt()
        assert dec_file.stat().st_size == size
        timings: dict[str, list[float]] = {}
        openssl: list[float] = []
        measures: dict[str, Callable[[], float]] = {}
        for s in SEGMENT_SIZES:
            measures[f"encrypt memory {s >> 10} KiB"] = lambda s=s: _encrypt_memory(
                plaintext, key, s
            )  # type: ignore[misc]
            measures[f"decrypt memory {s >> 10} KiB"] = lambda s=s: _decrypt_memory(
                containers[s], key, size
            )  # type: ignore[misc]
        measures["read_segments file 1024 KiB"] = lambda: _read_segments(seg_file, key, size)
        measures["encrypt file to file"] = file_encrypt
        measures["decrypt file to file"] = file_decrypt
        for _ in range(runs):
            limit = openssl_speed(1, args.openssl_seconds)
            if limit is not None:
                openssl.append(limit)
            for name, fn in measures.items():
                timings.setdefault(name, []).append(fn())
        limit_all = openssl_speed(cores, args.openssl_seconds) if cores > 1 else None
        enc_all, dec_all = _all_cores(min(size, 128 << 20), cores)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    one = statistics.median(openssl) if openssl else None
    print(f"cores: {cores}  plaintext: {args.mib} MiB  runs: {runs} (medians)")
    if one is not None:
        print(f"openssl speed aes-256-gcm 16 KiB, 1 core: {one:8.0f} MB/s")
    if limit_all is not None:
        print(f"openssl speed aes-256-gcm 16 KiB, {cores} cores: {limit_all:7.0f} MB/s")
    for name, times in timings.items():
        rate = _median_rate(times, size)
        ratio = f"  /openssl: {rate / one:.2f}" if one else ""
        print(f"{name:<30} {rate:8.0f} MB/s{ratio}")
    ratio_all = (
        f"  /openssl: enc {enc_all / limit_all:.2f} dec {dec_all / limit_all:.2f}"
        if limit_all
        else ""
    )
    print(
        f"all {cores} cores (processes): encrypt {enc_all:.0f} MB/s  "
        f"decrypt {dec_all:.0f} MB/s{ratio_all}"
    )
    decrypt = _median_rate(timings[f"decrypt memory {DEFAULT_SEGMENT >> 10} KiB"], size)
    encrypt = _median_rate(timings[f"encrypt memory {DEFAULT_SEGMENT >> 10} KiB"], size)
    if one is None:
        raise SystemExit("openssl is absent: no reference figure")
    print(f"encrypt/openssl: {encrypt / one:.2f}")
    print(f"decrypt/openssl: {decrypt / one:.2f}")


if __name__ == "__main__":
    main()
