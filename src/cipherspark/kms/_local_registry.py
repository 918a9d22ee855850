"""The ``file://`` keystore's dataset registry (the model: :mod:`cipherspark.kms.registry`).

Layout, beside the keys::

    DIR/datasets/.lock             flock(2)ed around every compare-and-swap
    DIR/datasets/<sha256(location)>.json   one record, sealed

Each record is canonical JSON sealed with AES-256-GCM under the keystore's sealing key (scrypt
of the credentials), with the location as associated data: a record file copied to another
location's name, or edited, does not open, and whoever reads the files learns nothing but
which locations are registered (in clear, for lookups by dataset id). The compare-and-swap runs
under an exclusive ``flock`` of ``.lock``, so two processes of one machine writing one location
commit one at a time, and the rule is the server's
(:func:`~cipherspark.kms.registry.check_registration`).

Limits (docs/security.md): the keystore is as trusted as the owner's machine that holds it.
Whoever can write the directory can delete a record (readers then refuse the dataset: nothing
is registered there) or put back an older copy of the whole keystore with an older dataset, a
rollback this cannot see. The KMS server keeps its registry in its sealed, audited database.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherspark._atomic import create_file
from cipherspark.errors import IntegrityError, KmsError
from cipherspark.kms._wire import b64decode, b64encode
from cipherspark.kms.registry import (
    DatasetRecord,
    check_move,
    check_registration,
    dataset_location,
    verify_registration_proof,
)

__all__ = ["LocalRegistry"]

_AAD = b"cipherspark/local-kms/v1/dataset\x00"
_NONCE = 12
_FIELDS = (
    "location",
    "dataset_id",
    "key_id",
    "generation",
    "manifest_sha256",
    "wrapped_key_sha256",
)

Unwrap = Callable[[str, bytes], bytes]


class LocalRegistry:
    """The records of one keystore directory, sealed under its sealing key."""

    def __init__(self, directory: Path, sealing_key: bytes, unwrap: Unwrap) -> None:
        self._dir = directory / "datasets"
        self._aead = AESGCM(sealing_key)
        self._unwrap = unwrap

    def _file(self, location: str) -> Path:
        return self._dir / f"{hashlib.sha256(location.encode()).hexdigest()}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._dir.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise KmsError(f"cannot open the dataset registry in {self._dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self, location: str) -> DatasetRecord | None:
        path = self._file(location)
        try:
            sealed = b64decode(json.loads(path.read_bytes())["sealed"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KmsError(f"dataset registry file {path} is damaged") from exc
        return self._open(sealed, location, path)

    def _open(self, sealed: bytes, location: str, path: Path) -> DatasetRecord:
        try:
            plain = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], _AAD + location.encode())
            doc = json.loads(plain)
            record = DatasetRecord(**{name: doc[name] for name in _FIELDS})
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"dataset registry file {path} does not open: it was modified or copied from "
                "another location"
            ) from exc
        if record.location != location:
            raise IntegrityError(f"dataset registry file {path} names another location")
        return record

    def _write(self, record: DatasetRecord) -> None:
        doc = {name: getattr(record, name) for name in _FIELDS}
        plain = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, plain, _AAD + record.location.encode())
        # The location in clear too, for find_dataset; the seal binds it (associated data).
        body = {"location": record.location, "sealed": b64encode(sealed)}
        create_file(self._file(record.location), json.dumps(body).encode())

    def _check_proof(
        self,
        record: DatasetRecord,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        if hashlib.sha256(wrapped_key).hexdigest() != record.wrapped_key_sha256:
            raise IntegrityError(
                "the wrapped data key sent is not the one the dataset record names "
                "(its SHA-256 differs)"
            )
        data_key = self._unwrap(record.key_id, wrapped_key)
        if not verify_registration_proof(data_key, record, previous, proof):
            raise IntegrityError(
                "the registration proof does not match the dataset record and its data key"
            )

    # -- the KeyManagementService methods ---------------------------------------------------------

    def dataset_at(self, location: str) -> DatasetRecord | None:
        """The record at ``location``, or ``None``."""
        return self._read(dataset_location(location))

    def find_dataset(self, dataset_id: str) -> list[DatasetRecord]:
        """Every record of ``dataset_id``, by location (each file is opened: for messages
        only, and a keystore holds few datasets)."""
        found = []
        for path in sorted(self._dir.glob("*.json")) if self._dir.is_dir() else []:
            try:
                location = json.loads(path.read_bytes())["location"]
                record = self._read(location) if isinstance(location, str) else None
            except (OSError, ValueError, KeyError, TypeError, IntegrityError, KmsError):
                continue  # not a record of this registry: dataset_at refuses it where it is
            if record is not None and self._file(location) == path:
                if record.dataset_id == dataset_id:
                    found.append(record)
        return sorted(found, key=lambda r: r.location)

    def register_dataset(
        self,
        record: DatasetRecord,
        *,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Compare-and-swap ``record`` over ``previous`` (:func:`check_registration`)."""
        self._check_proof(record, previous, wrapped_key, proof)
        with self._locked():
            if check_registration(self._read(record.location), record, previous):
                self._write(record)

    def move_dataset(
        self,
        source: DatasetRecord,
        target: DatasetRecord,
        *,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Move ``source`` to ``target.location`` (:func:`check_move`)."""
        check_move(source, target, source, None)
        self._check_proof(target, source, wrapped_key, proof)
        with self._locked():
            check_move(source, target, self._read(source.location), self._read(target.location))
            self._write(target)
            self._file(source.location).unlink()
