"""Tink-compatible AES256_GCM_HKDF streaming AEAD: the segmented body of a container.

This is the "hazmat" layer: it knows segments, nonces and keys, nothing about files or KMSs.
It follows Tink's wire format exactly so that Tink can decrypt our bodies and we can decrypt
Tink's (https://developers.google.com/tink/streaming-aead/aes_gcm_hkdf_streaming):

* body header: ``header_length (1 byte) || salt (32 bytes) || nonce_prefix (7 bytes)``, 40 bytes;
* segment key: ``HKDF-SHA256(ikm=data key, salt=salt, info=associated data, L=32)``;
* segment ``i`` nonce: ``nonce_prefix || BE32(i) || last_flag`` (12 bytes), last_flag 1 on the
  final segment only;
* each segment is AES-256-GCM of its plaintext with that nonce and no AAD (16-byte tag);
* every ciphertext segment is ``S`` bytes except the last; the first one also carries the
  40-byte body header, so it holds ``S - 40 - 16`` plaintext bytes, the others ``S - 16``
  (Tink's first-segment offset rule, with ciphertext offset 0).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cipherspark.errors import IntegrityError

__all__ = [
    "BODY_HEADER_SIZE",
    "KEY_SIZE",
    "NONCE_PREFIX_SIZE",
    "SALT_SIZE",
    "TAG_SIZE",
    "SegmentCipher",
    "SegmentLayout",
]

KEY_SIZE = 32
SALT_SIZE = 32  # Tink: salt size equals the derived key size
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
BODY_HEADER_SIZE = 1 + SALT_SIZE + NONCE_PREFIX_SIZE  # 40
MIN_SEGMENT_SIZE = BODY_HEADER_SIZE + TAG_SIZE + 1  # the first segment must hold one byte
MAX_SEGMENT_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class SegmentLayout:
    """Where each segment of a body lies, for a ciphertext segment size ``S``.

    Offsets are relative to the start of the body (the Tink ciphertext), not of the file.
    """

    segment_size: int

    @property
    def first_plaintext_size(self) -> int:
        """Plaintext bytes in segment 0."""
        return self.segment_size - BODY_HEADER_SIZE - TAG_SIZE

    @property
    def plaintext_size(self) -> int:
        """Plaintext bytes in every full segment after the first."""
        return self.segment_size - TAG_SIZE

    def plaintext_offset(self, index: int) -> int:
        """Offset in the plaintext where segment ``index`` starts."""
        if index == 0:
            return 0
        return self.first_plaintext_size + (index - 1) * self.plaintext_size

    def ciphertext_range(self, index: int, body_size: int) -> tuple[int, int]:
        """``(start, end)`` of segment ``index``'s ciphertext within a body of ``body_size``."""
        start = BODY_HEADER_SIZE if index == 0 else index * self.segment_size
        end = min((index + 1) * self.segment_size, body_size)
        return start, end

    def segment_count(self, body_size: int) -> int:
        """Number of segments in a body of ``body_size`` bytes; raise if no valid body has it."""
        if body_size < BODY_HEADER_SIZE + TAG_SIZE:
            raise IntegrityError("the encrypted body is truncated (shorter than one segment)")
        count, rest = divmod(body_size, self.segment_size)
        if rest:
            count += 1
        last_start, last_end = self.ciphertext_range(count - 1, body_size)
        if last_end - last_start < TAG_SIZE:
            raise IntegrityError(
                "the encrypted body is truncated (a segment is shorter than its tag)"
            )
        return count

    def plaintext_size_of(self, body_size: int) -> int:
        """Total plaintext bytes of a valid body of ``body_size`` bytes."""
        count = self.segment_count(body_size)
        return body_size - BODY_HEADER_SIZE - count * TAG_SIZE


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class SegmentCipher:
    """Encrypts or decrypts the segments of one body.

    Build it with :meth:`new` (fresh salt and nonce prefix, for writing) or :meth:`from_body_header`
    (for reading). The data key itself is not kept, only the derived segment key.
    """

    __slots__ = ("_aead", "_prefix", "body_header")

    def __init__(self, data_key: bytes, associated_data: bytes, salt: bytes, prefix: bytes) -> None:
        if len(data_key) != KEY_SIZE:
            raise ValueError("data key must be 32 bytes")
        segment_key = HKDF(
            algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=associated_data
        ).derive(data_key)
        self._aead = AESGCM(segment_key)
        self._prefix = prefix
        self.body_header = bytes([BODY_HEADER_SIZE]) + salt + prefix

    @classmethod
    def new(cls, data_key: bytes, associated_data: bytes) -> SegmentCipher:
        """A cipher for a new body, with a random salt and nonce prefix."""
        return cls(data_key, associated_data, os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE))

    @classmethod
    def from_body_header(
        cls, data_key: bytes, associated_data: bytes, body_header: bytes
    ) -> SegmentCipher:
        """A cipher for an existing body whose first 40 bytes are ``body_header``."""
        if len(body_header) != BODY_HEADER_SIZE or body_header[0] != BODY_HEADER_SIZE:
            raise IntegrityError("the encrypted body header is malformed")
        salt = body_header[1 : 1 + SALT_SIZE]
        prefix = body_header[1 + SALT_SIZE :]
        return cls(data_key, associated_data, salt, prefix)

    def encrypt(self, index: int, plaintext: bytes | bytearray | memoryview, last: bool) -> bytes:
        """Ciphertext (with tag) of segment ``index``."""
        return self._aead.encrypt(_nonce(self._prefix, index, last), plaintext, None)

    def decrypt(self, index: int, ciphertext: bytes | memoryview, last: bool) -> bytes:
        """Plaintext of segment ``index``; :class:`IntegrityError` if it does not authenticate."""
        try:
            return self._aead.decrypt(_nonce(self._prefix, index, last), ciphertext, None)
        except InvalidTag as exc:
            raise IntegrityError(
                f"segment {index} failed authentication: the data was modified, truncated, "
                "reordered, or encrypted under another key"
            ) from exc
