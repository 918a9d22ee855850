"""The encrypted container format: an authenticated header and a segmented AEAD body.

The safe API is :class:`ContainerHeader`, :class:`EncryptingWriter`, :func:`decrypt_stream` and
:class:`ContainerFile`; the segment primitives live in the private ``_streaming`` module.
See ``docs/format.md`` for the specification.
"""

from cipherspark.crypto._streaming import BODY_HEADER_SIZE
from cipherspark.crypto.container import (
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_CSV_HEADER,
    CONTENT_TYPE_CSV_NO_HEADER,
    CONTENT_TYPE_JSON_LINES,
    CONTENT_TYPE_TEXT,
    DEFAULT_SEGMENT_SIZE,
    MAGIC,
    ContainerFile,
    ContainerHeader,
    EncryptingWriter,
    ExpectedPart,
    decrypt_stream,
    is_container,
    read_header,
)

__all__ = [
    "BODY_HEADER_SIZE",
    "CONTENT_TYPE_BINARY",
    "CONTENT_TYPE_CSV_HEADER",
    "CONTENT_TYPE_CSV_NO_HEADER",
    "CONTENT_TYPE_JSON_LINES",
    "CONTENT_TYPE_TEXT",
    "DEFAULT_SEGMENT_SIZE",
    "MAGIC",
    "ContainerFile",
    "ContainerHeader",
    "EncryptingWriter",
    "ExpectedPart",
    "decrypt_stream",
    "is_container",
    "read_header",
]
