"""The embedded, file-backed KMS: the laptop default (``file://DIR``).

Layout of the keystore directory (mode 0700, files 0600)::

    DIR/keystore.json        KDF parameters and salt, and a check value for the credentials
    DIR/keys/NAME.json       one sealed primary key per file
    DIR/policies/NAME.json   its attested-release policy (the server's JSON format)
    DIR/datasets/*.json      the dataset registry, one sealed record per location
                             (:mod:`cipherspark.kms._local_registry`)

The *sealing key* is scrypt(APP ID, API KEY) with a per-keystore random salt, so the files alone
reveal nothing. Primary keys are 256-bit random, sealed with AES-256-GCM under the sealing key with
the key name bound as associated data (a sealed key copied to another name does not open). Data
keys are wrapped with AES-256-GCM under the primary key, again with the key name as associated
data. Nothing here is ECB, and no key bytes are derived from strings other than through scrypt.

Whoever copies the files can guess API keys offline at scrypt's cost, so a new keystore takes
only an API key of at least 128 bits (:func:`check_api_key_strength`; :func:`generate_api_key`
makes one), and costs more scrypt work than 0.1.0's did. The KDF parameters are stored in
``keystore.json``: keystores created before keep opening with theirs.

Attested release (development only): each new key gets a policy that allows only the
``simulated`` TEE, with this installation's simulated-platform public key and the installed
code's measurement. :meth:`LocalKms.attested_unwrap` runs the release protocol in-process with
the same verifier and policy code as the KMS server. The policy files are protected by file
permissions only, like the rest of the keystore: real TEEs need the KMS server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import string
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from cipherspark._atomic import create_file
from cipherspark.errors import (
    CredentialsError,
    IntegrityError,
    KeyExistsError,
    KeyNotFoundError,
    KmsError,
    KmsUnavailableError,
    PolicyDeniedError,
)
from cipherspark.kms._local_registry import LocalRegistry
from cipherspark.kms._wire import b64decode, b64encode
from cipherspark.kms.base import (
    Credentials,
    DataKey,
    KeyInfo,
    KeyManagementService,
    validate_key_name,
)

if TYPE_CHECKING:
    from cipherspark.attestation import AttestationPolicy, EvidenceProvider
    from cipherspark.kms.registry import DatasetRecord

__all__ = [
    "MIN_API_KEY_BITS",
    "LocalKms",
    "check_api_key_strength",
    "generate_api_key",
    "simulated_development_policy",
]

_STORE_FORMAT = "cipherspark-local-kms"
_STORE_VERSION = 1
# Wrapped data keys: 3 is what this keystore writes, 1 what it wrote before 0.2 (still read); 2
# is the KMS server's (kms/server/keyring.py), named as such when one is handed to a keystore.
_WRAP_VERSION = 3
_WRAP_V1 = 1
_WRAP_SERVER = 2
_FINGERPRINT = 8
_AAD_FINGERPRINT = b"cipherspark/local-kms/v1/fingerprint"
_NONCE = 12
_KEY = 32
# scrypt cost of new keystores: 2^17 * 8 * 128 B = 128 MiB, OWASP's minimum for scrypt
# (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html#scrypt).
# Measured here (2 cores, shared): 2^17 takes 0.37-0.40 s, about 2.5 guesses/s/core; 0.1.0's 2^15
# took 0.08-0.15 s (7-12 guesses/s/core). Paid once per process per keystore (cached). Guessing
# is what a thief of the files can do; the API-key rule below is what makes it hopeless.
_SCRYPT = {"n": 1 << 17, "r": 8, "p": 1}
# Most scrypt work a keystore file may ask for: n * r * p (2x the default; 256 MiB, under 1 s).
_MAX_SCRYPT_WORK = 1 << 21
#: A new keystore's API KEY must hold at least this many bits if it is random over its alphabet.
MIN_API_KEY_BITS = 128
# What token generators print (base64, base64url, hex): nothing a shell or an env file mangles.
_TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.~+/=")
_GENERATED_API_KEY_BYTES = 32  # 43 base64url characters, 256 bits (like the KMS server's keys)
_CHECK_PLAINTEXT = b"cipherspark local keystore"
_AAD_CHECK = b"cipherspark/local-kms/v1/check"
_AAD_SEAL = b"cipherspark/local-kms/v1/primary-key\x00"
_AAD_WRAP = b"cipherspark/wrap/v1\x00"
_AAD_WRAP_V3 = b"cipherspark/wrap/v3\x00"


def _fingerprint(primary: bytes) -> bytes:
    """What names a primary key in the keys it wraps: 64 bits of a PRF of it (not the key:
    HMAC-SHA256 under the key, of a fixed label), enough to tell two keys apart by accident."""
    return hmac.new(primary, _AAD_FINGERPRINT, hashlib.sha256).digest()[:_FINGERPRINT]


# Sealing keys by what derives them: (directory, APP ID, API KEY, salt, n, r, p).
_sealing_keys: dict[tuple[str, str, str, bytes, int, int, int], bytes] = {}
_sealing_lock = threading.Lock()


def _write_private(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to a new 0600 file and rename it to ``path`` (:func:`create_file`: never
    into an existing file, never through a link).

    With ``replace=False`` the file is published with link(2), which fails if ``path`` exists:
    two processes creating the same key cannot both succeed.
    """
    try:
        create_file(path, data, replace=replace)
    except FileExistsError as exc:
        raise KeyExistsError(f"{path.stem!r} exists already in {path.parent}") from exc


class LocalKms(KeyManagementService):
    """A keystore directory opened with an application's credentials.

    ``create=True`` initialises an absent or empty directory for these credentials; otherwise
    the directory must be an existing keystore.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        credentials: Credentials,
        *,
        create: bool = False,
        simulated_key_path: Path | None = None,
    ) -> None:
        self._dir = Path(directory).absolute()
        # None: CIPHERSPARK_SIMULATED_TEE_KEY or ~/.cipherspark/simulated-tee/platform.key.
        self._simulated_key_path = simulated_key_path
        self._store_file = self._dir / "keystore.json"
        if not self._store_file.exists():
            if not create:
                raise KmsError(
                    f"no keystore at {self._dir} (create one with 'cipherspark key create')"
                )
            self._initialise(credentials)
        self._sealing_key = self._open(credentials)
        self._registry = LocalRegistry(self._dir, self._sealing_key, self.unwrap_data_key)

    @property
    def url(self) -> str:
        """``file://`` URL of the keystore directory."""
        return self._dir.as_uri()

    # -- keystore -------------------------------------------------------------------------------

    def _initialise(self, credentials: Credentials) -> None:
        check_api_key_strength(credentials.api_key)  # before anything is created
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self._dir / "keys").mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise KmsError(f"cannot create keystore at {self._dir}: {exc.strerror}") from exc
        salt = os.urandom(16)
        params = dict(_SCRYPT)
        sealing = _derive(credentials, salt, params)
        nonce = os.urandom(_NONCE)
        check = nonce + AESGCM(sealing).encrypt(nonce, _CHECK_PLAINTEXT, _AAD_CHECK)
        doc = {
            "format": _STORE_FORMAT,
            "version": _STORE_VERSION,
            "kdf": {"name": "scrypt", "salt": b64encode(salt), **params},
            "check": b64encode(check),
        }
        _write_private(self._store_file, json.dumps(doc, indent=2).encode())
        # _open derives the same key next: paying scrypt once, not twice, per new keystore.
        with _sealing_lock:
            _sealing_keys[self._cache_key(credentials, salt, params)] = sealing

    def _open(self, credentials: Credentials) -> bytes:
        try:
            doc = json.loads(self._store_file.read_text())
            if (
                not isinstance(doc, dict)
                or doc.get("format") != _STORE_FORMAT
                or doc.get("version") != _STORE_VERSION
            ):
                raise KmsError(f"{self._store_file} is not a keystore this version can read")
            kdf = doc["kdf"]
            params = {"n": int(kdf["n"]), "r": int(kdf["r"]), "p": int(kdf["p"])}
            # Bound the cost an edited keystore file can impose (memory = 128 * n * r bytes,
            # time ~ n * r * p): each bound alone still let 4 GiB and minutes of work through.
            if not (
                2 <= params["n"] <= 1 << 20
                and 1 <= params["r"] <= 32
                and 1 <= params["p"] <= 16
                and params["n"] * params["r"] * params["p"] <= _MAX_SCRYPT_WORK
            ):
                raise ValueError("scrypt parameters out of range")
            salt = b64decode(kdf["salt"])
            check = b64decode(doc["check"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KmsError(f"cannot read keystore {self._store_file}: it is damaged") from exc
        cache_key = self._cache_key(credentials, salt, params)
        with _sealing_lock:
            sealing = _sealing_keys.get(cache_key)
            if sealing is None:
                sealing = _derive(credentials, salt, params)
        try:
            AESGCM(sealing).decrypt(check[:_NONCE], check[_NONCE:], _AAD_CHECK)
        except (InvalidTag, ValueError) as exc:
            raise CredentialsError(
                f"the APP ID / API KEY do not open the keystore at {self._dir}"
            ) from exc
        with _sealing_lock:
            _sealing_keys[cache_key] = sealing
        return sealing

    def _cache_key(
        self, credentials: Credentials, salt: bytes, params: dict[str, int]
    ) -> tuple[str, str, str, bytes, int, int, int]:
        # The salt is part of the key: a keystore re-created at the same path has a new one.
        return (
            str(self._dir),
            credentials.app_id,
            credentials.api_key,
            salt,
            params["n"],
            params["r"],
            params["p"],
        )

    def _policy_file(self, name: str) -> Path:
        return self._dir / "policies" / f"{validate_key_name(name)}.json"

    def _key_file(self, name: str) -> Path:
        return self._dir / "keys" / f"{validate_key_name(name)}.json"

    def _load(self, name: str) -> tuple[dict[str, Any], bytes]:
        path = self._key_file(name)
        try:
            doc = json.loads(path.read_text())
            sealed = b64decode(doc["sealed"])
        except FileNotFoundError as exc:
            raise KeyNotFoundError(f"no primary key named {name!r} in {self._dir}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KmsError(f"primary key file {path} is damaged") from exc
        try:
            primary = AESGCM(self._sealing_key).decrypt(
                sealed[:_NONCE], sealed[_NONCE:], _AAD_SEAL + name.encode()
            )
        except (InvalidTag, ValueError) as exc:
            raise KmsError(f"primary key {name!r} does not unseal: its file was modified") from exc
        return doc, primary

    @staticmethod
    def _info(doc: dict[str, Any]) -> KeyInfo:
        try:
            return KeyInfo(
                name=str(doc["name"]), version=int(doc["version"]), created=str(doc["created"])
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise KmsError("a primary key file's metadata is damaged") from exc

    # -- KeyManagementService -------------------------------------------------------------------

    def create_key(self, name: str) -> KeyInfo:
        """Create primary key ``name``; :class:`KeyExistsError` if it exists."""
        path = self._key_file(name)
        if path.exists():
            raise KeyExistsError(f"a primary key named {name!r} exists already in {self._dir}")
        # Before the key exists: a key must never be left without its policy by a failure here.
        policy = simulated_development_policy(self._simulated_key_path)
        primary = os.urandom(_KEY)
        nonce = os.urandom(_NONCE)
        sealed = nonce + AESGCM(self._sealing_key).encrypt(
            nonce, primary, _AAD_SEAL + name.encode()
        )
        doc = {
            "name": name,
            "version": 1,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "sealed": b64encode(sealed),
        }
        try:
            _write_private(path, json.dumps(doc, indent=2).encode(), replace=False)
        except KeyExistsError as exc:
            raise KeyExistsError(
                f"a primary key named {name!r} exists already in {self._dir}"
            ) from exc
        self._write_policy(name, policy)
        return self._info(doc)

    def list_keys(self) -> list[KeyInfo]:
        """Every primary key in the keystore, by name."""
        infos = []
        for path in sorted((self._dir / "keys").glob("*.json")):
            doc, _ = self._load(path.stem)
            infos.append(self._info(doc))
        return infos

    def describe_key(self, name: str) -> KeyInfo:
        """Facts about primary key ``name``."""
        doc, _ = self._load(name)
        return self._info(doc)

    def generate_data_key(self, key_id: str) -> DataKey:
        """A fresh 256-bit data key and its wrapping under ``key_id``."""
        _, primary = self._load(key_id)
        plaintext = os.urandom(_KEY)
        nonce = os.urandom(_NONCE)
        wrapped = (
            bytes([_WRAP_VERSION])
            + _fingerprint(primary)
            + nonce
            + AESGCM(primary).encrypt(nonce, plaintext, _AAD_WRAP_V3 + key_id.encode())
        )
        return DataKey(key_id=key_id, plaintext=plaintext, wrapped=wrapped)

    def unwrap_data_key(self, key_id: str, wrapped: bytes) -> bytes:
        """Unwrap a data key wrapped by :meth:`generate_data_key` under ``key_id``.

        The wrapped key names its primary key by a fingerprint, so that a file encrypted with
        another keystore (or a key deleted and created again under the same name) is reported
        as such rather than as a modified file; either way nothing is unwrapped.
        """
        _, primary = self._load(key_id)
        version = wrapped[0] if wrapped else None
        if version == _WRAP_SERVER:
            raise IntegrityError(
                f"the data key was wrapped by a KMS server, not by this keystore ({self.url}): "
                "point --kms (CIPHERSPARK_KMS) at the KMS that encrypted it"
            )
        if version == _WRAP_V1 and len(wrapped) == 1 + _NONCE + _KEY + 16:
            nonce, sealed, aad = wrapped[1 : 1 + _NONCE], wrapped[1 + _NONCE :], _AAD_WRAP
            mismatch = (
                "the header was modified, or the file was encrypted with another keystore "
                "or with an earlier key of that name"
            )
        elif version == _WRAP_VERSION and len(wrapped) == 1 + _FINGERPRINT + _NONCE + _KEY + 16:
            if not hmac.compare_digest(wrapped[1 : 1 + _FINGERPRINT], _fingerprint(primary)):
                raise IntegrityError(
                    f"the data key was wrapped by another primary key named {key_id!r} than "
                    f"this keystore's ({self.url}): the file was encrypted with another "
                    "keystore, or before the key was created again; point --kms "
                    "(CIPHERSPARK_KMS) at the keystore that encrypted it"
                )
            body = wrapped[1 + _FINGERPRINT :]
            nonce, sealed, aad = body[:_NONCE], body[_NONCE:], _AAD_WRAP_V3
            mismatch = "the header was modified"
        else:
            raise IntegrityError(f"the wrapped data key for {key_id!r} is malformed")
        try:
            return AESGCM(primary).decrypt(nonce, sealed, aad + key_id.encode())
        except InvalidTag as exc:
            raise IntegrityError(
                f"the data key does not unwrap under primary key {key_id!r}: {mismatch}"
            ) from exc

    # -- the dataset registry -------------------------------------------------------------------

    def dataset_at(self, location: str) -> DatasetRecord | None:
        """The registered record at ``location``, or ``None``."""
        return self._registry.dataset_at(location)

    def find_dataset(self, dataset_id: str) -> list[DatasetRecord]:
        """Every location where dataset ``dataset_id`` is registered, by location."""
        return self._registry.find_dataset(dataset_id)

    def register_dataset(
        self,
        record: DatasetRecord,
        *,
        previous: DatasetRecord | None,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Compare-and-swap ``record`` over ``previous`` (see the base class)."""
        self._registry.register_dataset(
            record, previous=previous, wrapped_key=wrapped_key, proof=proof
        )

    def move_dataset(
        self,
        source: DatasetRecord,
        target: DatasetRecord,
        *,
        wrapped_key: bytes,
        proof: bytes,
    ) -> None:
        """Move ``source`` to ``target.location`` (see the base class)."""
        self._registry.move_dataset(source, target, wrapped_key=wrapped_key, proof=proof)

    # -- attested release (simulated TEE only) --------------------------------------------------

    def _write_policy(self, name: str, policy: AttestationPolicy) -> None:
        folder = self._dir / "policies"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise KmsError(f"cannot create {folder}: {exc.strerror}") from exc
        _write_private(self._policy_file(name), policy.to_json().encode())

    def set_policy(self, key_id: str, policy: AttestationPolicy) -> AttestationPolicy:
        """Store ``key_id``'s release policy (replacing any); the normalised stored copy."""
        from cipherspark.attestation import AttestationPolicy

        self._load(key_id)  # the key must exist and these credentials must open it
        self._write_policy(key_id, policy)
        return AttestationPolicy.from_dict(policy.to_dict())

    def get_policy(self, key_id: str) -> AttestationPolicy | None:
        """``key_id``'s release policy, or ``None`` (none: attested unwraps are denied)."""
        from cipherspark.attestation import AttestationPolicy

        self._load(key_id)
        path = self._policy_file(key_id)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KmsError(f"cannot read the release policy {path}: {exc.strerror}") from exc
        return AttestationPolicy.from_json(text)

    def check_attested_release(self, tee: str) -> None:
        """Refuse every TEE but ``simulated``: DCAP quotes of real TEEs need the KMS server."""
        if tee != "simulated":
            raise KmsUnavailableError(
                f"attested key release of {tee!r} evidence needs a KMS server (https://); the "
                f"embedded keystore {self.url} verifies only the simulated TEE (development only)"
            )

    def attested_unwrap(
        self,
        key_id: str,
        wrapped: bytes,
        provider: EvidenceProvider,
        *,
        collateral: str | None = None,
    ) -> bytes:
        """The data key in ``wrapped``, released only to evidence ``key_id``'s policy accepts.

        The server's protocol, run in this process: a fresh nonce and ephemeral P-256 key,
        evidence from ``provider`` over SHA-512(nonce || public key), verification with the
        same verifier and policy code as the KMS server (an absent or empty policy denies),
        the binding check, and the data key sealed to the ephemeral key as a JWE and opened
        with it. Only ``simulated`` evidence is accepted here (see
        :meth:`check_attested_release`), so ``collateral``, which only DCAP quotes use, is
        ignored. A refusal is :class:`PolicyDeniedError` with the reason code the server would
        give.
        """
        from cipherspark.attestation import (
            EphemeralKey,
            bind,
            check_binding,
            seal_to,
            verify_evidence,
        )
        from cipherspark.errors import AttestationError

        self.check_attested_release(provider.tee)
        policy = self.get_policy(key_id)
        if policy is None:
            raise PolicyDeniedError(
                f"primary key {key_id!r} has no release policy; an absent or empty policy denies",
                "no_policy",
            )
        nonce = os.urandom(32)
        ephemeral = EphemeralKey.generate()
        evidence = provider.evidence(bind(nonce, ephemeral.public_bytes))
        try:
            report = verify_evidence(evidence, policy=policy)
            check_binding(report.report_data, nonce, ephemeral.public_bytes)
        except PolicyDeniedError:
            raise
        except AttestationError as exc:
            raise PolicyDeniedError(str(exc), exc.reason) from exc
        data_key = self.unwrap_data_key(key_id, wrapped)
        return ephemeral.open(seal_to(ephemeral.public_bytes, data_key))


def simulated_development_policy(key_path: Path | None = None) -> AttestationPolicy:
    """A policy allowing only the ``simulated`` TEE of this installation (development only).

    It registers the simulated-platform public key at ``key_path`` (default: see
    :func:`~cipherspark.attestation.simulated.default_simulated_key_path`; created if absent)
    and the measurement of the installed cipherspark code.
    """
    from cipherspark.attestation import (
        AttestationPolicy,
        code_measurement,
        load_simulated_platform_key,
        simulated_platform_public_key,
    )
    from cipherspark.errors import InputError

    try:
        public = simulated_platform_public_key(load_simulated_platform_key(key_path))
    except InputError as exc:
        raise KmsError(f"cannot set up the simulated-TEE policy: {exc}") from exc
    return AttestationPolicy.from_dict(
        {
            "tee_types": ["simulated"],
            "simulated": {"platform_keys": [public], "measurements": [code_measurement()]},
        }
    )


def generate_api_key() -> str:
    """A fresh API KEY for a new keystore: 256 random bits as 43 base64url characters."""
    return secrets.token_urlsafe(_GENERATED_API_KEY_BYTES)


def _alphabet(api_key: str) -> tuple[int, str]:
    """(size, description) of the smallest alphabet of the rule that holds every character."""
    if all(c in string.digits for c in api_key):
        return 10, "of digits only"
    if all(c in "0123456789abcdef" for c in api_key) or all(
        c in "0123456789ABCDEF" for c in api_key
    ):
        return 16, "of hex digits only"
    # Counted as 64 (base64url) although 69 characters are allowed: the lower bound is the
    # alphabet the generators use.
    return 64, "of token characters"


def check_api_key_strength(api_key: str) -> None:
    """Refuse an API KEY too weak to protect a new keystore (:class:`CredentialsError`).

    The rule: only token characters (letters, digits, ``- _ . ~ + / =``), at least 8 different
    ones, and enough of them for :data:`MIN_API_KEY_BITS` bits were the key random over the
    smallest of these alphabets that holds it: 22 characters (base64url, 6 bits each), 32 if
    they are hex digits only, 39 if digits only. Random keys of the minimum length
    (``secrets.token_urlsafe(16)``, ``openssl rand -hex 16``) fail it with a probability below
    1e-7 (fewer than 8 different characters). It cannot see a guessable phrase of 22 letters:
    it bounds what a short or repetitive key loses, and the generated key is the remedy. The
    message never holds the key.
    """
    fix = "leave CIPHERSPARK_API_KEY unset and 'cipherspark key create' generates a strong one"
    if not set(api_key) <= _TOKEN_CHARACTERS:
        raise CredentialsError(
            f"the API KEY of a new keystore may hold only letters, digits and - _ . ~ + / =; {fix}"
        )
    size, kind = _alphabet(api_key)
    needed = math.ceil(MIN_API_KEY_BITS / math.log2(size))
    if len(api_key) < needed:
        raise CredentialsError(
            f"the API KEY is too weak for a new keystore: a key {kind} needs at least {needed} "
            f"characters ({MIN_API_KEY_BITS} bits), it has {len(api_key)}; {fix}"
        )
    if len(set(api_key)) < 8:
        raise CredentialsError(
            "the API KEY is too weak for a new keystore: it has fewer than 8 different "
            f"characters; {fix}"
        )


def _derive(credentials: Credentials, salt: bytes, params: dict[str, int]) -> bytes:
    secret = credentials.app_id.encode() + b"\x00" + credentials.api_key.encode()
    try:
        return Scrypt(salt=salt, length=_KEY, **params).derive(secret)
    except (ValueError, MemoryError) as exc:
        raise KmsError("the keystore's KDF parameters are out of range") from exc
