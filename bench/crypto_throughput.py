"""Container encryption and decryption throughput vs the AES-256-GCM limit of ``openssl speed``.

Measured in one run on one core: ``openssl speed -evp aes-256-gcm`` at 16 KiB blocks (the
machine's limit), then cipherspark's EncryptingWriter / decrypt_stream over an in-memory buffer
for each segment size. Prints MB/s and the ratio to openssl for each.

    .venv/bin/python bench/crypto_throughput.py --mib 256
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import time

from cipherspark.crypto import ContainerHeader, EncryptingWriter, decrypt_stream

SEGMENT_SIZES = (256 << 10, 1 << 20, 2 << 20, 4 << 20)


def openssl_limit() -> float | None:
    """MB/s of ``openssl speed`` AES-256-GCM at 16 KiB blocks, or None without openssl."""
    if shutil.which("openssl") is None:
        return None
    out = subprocess.run(
        ["openssl", "speed", "-seconds", "2", "-bytes", "16384", "-evp", "aes-256-gcm"],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.lower().startswith("aes-256-gcm"))
    kbytes = float(re.findall(r"([\d.]+)k", line)[-1])
    return kbytes * 1000 / 1e6


class _Keep:
    """A sink that keeps the written chunks without joining them (no BytesIO regrowth)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(data)
        return len(data)


def measure(size: int, segment_size: int) -> tuple[float, float]:
    """(encrypt MB/s, decrypt MB/s) for ``size`` bytes of plaintext, in memory."""
    plaintext = os.urandom(size)
    key = os.urandom(32)
    header = ContainerHeader("bench", b"\x01" * 61, segment_size)
    sink = _Keep()
    start = time.perf_counter()
    writer = EncryptingWriter(sink, header, key)  # type: ignore[arg-type]
    view = memoryview(plaintext)
    for offset in range(0, size, 1 << 20):
        writer.write(view[offset : offset + (1 << 20)])
    writer.close()
    enc = time.perf_counter() - start
    data = b"".join(sink.chunks)
    start = time.perf_counter()
    total = sum(len(c) for c in decrypt_stream(io.BytesIO(data), lambda _h: key))
    dec = time.perf_counter() - start
    assert total == size
    return size / enc / 1e6, size / dec / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="plaintext size per measurement")
    args = parser.parse_args()
    limit = openssl_limit()
    print(f"openssl speed aes-256-gcm 16 KiB: {limit:.0f} MB/s" if limit else "openssl: absent")
    for segment_size in SEGMENT_SIZES:
        enc, dec = measure(args.mib << 20, segment_size)
        ratios = f"  ratio to openssl: enc {enc / limit:.2f} dec {dec / limit:.2f}" if limit else ""
        print(f"segment {segment_size >> 10:5d} KiB: encrypt {enc:7.0f} MB/s  "
              f"decrypt {dec:7.0f} MB/s{ratios}")


if __name__ == "__main__":
    main()
