"""The Vault Transit operations of the service: encrypt, decrypt, rewrap and data keys under
the same primary keys and permissions as the native API (decrypt and plaintext data keys are
key material: attested-only keys give them to the owner credential alone; so is encrypt of a
caller's plaintext, which would let a workload credential forge ciphertexts readers accept)."""

from __future__ import annotations

import os

from cipherspark.errors import UsageError
from cipherspark.kms.server import keyring
from cipherspark.kms.server._audited import Outcome
from cipherspark.kms.server._core import ServiceCore
from cipherspark.kms.server.permissions import Access, Principal
from cipherspark.kms.server.records import KeyRecord

__all__ = ["TransitOperations"]


class TransitOperations(ServiceCore):
    """Transit encrypt / decrypt / rewrap / data keys (``vault:vN:`` ciphertexts)."""

    def transit_encrypt(
        self,
        who: Principal,
        name: str,
        plaintext: bytes,
        request_id: str,
        *,
        key_version: int | None = None,
    ) -> tuple[str, int]:
        """(``vault:vN:...`` ciphertext, N) of ``plaintext`` under the current version
        (``key_version``, if given and not 0, must be that version)."""

        def run(out: Outcome) -> tuple[str, int]:
            if len(plaintext) > keyring.MAX_TRANSIT_PLAINTEXT:
                raise UsageError(f"plaintext is larger than {keyring.MAX_TRANSIT_PLAINTEXT} bytes")
            record = self._key(who, name, Access.SEAL, out)
            out.version = version = record.current_version
            if key_version not in (None, 0, version):
                raise UsageError("key_version: only the latest version encrypts")
            primary = self._primary(record, version)
            return keyring.vault_ciphertext(primary, name, version, plaintext), version

        return self._run("transit.encrypt", who, name, request_id, run)

    def _transit_open(self, record: KeyRecord, ciphertext: str, out: Outcome) -> bytes:
        try:
            version, raw = keyring.parse_vault_ciphertext(ciphertext)
        except ValueError as exc:
            raise UsageError(f"invalid ciphertext: {exc}") from exc
        out.version = version
        return keyring.open_vault(self._decryptable(record, version), record.name, version, raw)

    def transit_decrypt(self, who: Principal, name: str, ciphertext: str, request_id: str) -> bytes:
        """The plaintext of a ``vault:vN:...`` ciphertext."""

        def run(out: Outcome) -> bytes:
            return self._transit_open(self._key(who, name, Access.RELEASE, out), ciphertext, out)

        return self._run("transit.decrypt", who, name, request_id, run)

    def transit_rewrap(
        self, who: Principal, name: str, ciphertext: str, request_id: str
    ) -> tuple[str, int]:
        """The ciphertext re-encrypted under the current version (key maintenance: owner)."""

        def run(out: Outcome) -> tuple[str, int]:
            record = self._key(who, name, Access.MANAGE, out)
            plaintext = self._transit_open(record, ciphertext, out)
            out.version = version = record.current_version
            primary = self._primary(record, version)
            return keyring.vault_ciphertext(primary, name, version, plaintext), version

        return self._run("transit.rewrap", who, name, request_id, run)

    def transit_datakey(
        self, who: Principal, name: str, bits: int, request_id: str, *, with_plaintext: bool
    ) -> tuple[bytes | None, str, int]:
        """(data key or ``None``, its Transit ciphertext, version) of a fresh ``bits``-bit key;
        the plaintext variant is key material, the wrapped one is not."""

        def run(out: Outcome) -> tuple[bytes | None, str, int]:
            if bits not in (128, 256, 512):
                raise UsageError("bits must be 128, 256 or 512")
            access = Access.RELEASE if with_plaintext else Access.WRAP
            record = self._key(who, name, access, out)
            out.version = version = record.current_version
            data_key = os.urandom(bits // 8)
            ciphertext = keyring.vault_ciphertext(
                self._primary(record, version), name, version, data_key
            )
            return (data_key if with_plaintext else None), ciphertext, version

        op = "transit.datakey.plaintext" if with_plaintext else "transit.datakey.wrapped"
        return self._run(op, who, name, request_id, run)
