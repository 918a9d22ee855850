"""BigDL PPML's ``PPMLContext`` API on cipherspark, for scripts written against BigDL.

A BigDL script changes only its import lines::

    from bigdl.ppml.ppml_context import *                              # BigDL
    from cipherspark.ppml import *                                     # cipherspark

    sc = PPMLContext("simple-query", ppml_args)
    df = sc.read(CryptoMode.AES_CBC_PKCS5PADDING).option("header", "true").csv("people")
    sc.write(df, CryptoMode.AES_CBC_PKCS5PADDING).mode("overwrite").csv("out")

BigDL-encrypted input (``AES/CBC/PKCS5Padding``) is verified (its HMAC, which BigDL never
checks) and re-encrypted on the driver before Spark reads it; every write, whatever mode it
names, is cipherspark's authenticated format under the cipherspark KMS and key of the
environment (``CIPHERSPARK_KMS``, ``CIPHERSPARK_KEY``, read through
:mod:`cipherspark.settings`). The migration guide is docs/ppml.md.
"""

from __future__ import annotations

from cipherspark.ppml._context import (
    CryptoMode,
    EncryptedDataFrameReader,
    EncryptedDataFrameWriter,
    PPMLContext,
    PPMLSettings,
    PPMLWarning,
)
from cipherspark.ppml._keys import KmsArgumentParser

__all__ = [
    "CryptoMode",
    "EncryptedDataFrameReader",
    "EncryptedDataFrameWriter",
    "KmsArgumentParser",
    "PPMLContext",
    "PPMLSettings",
    "PPMLWarning",
]
