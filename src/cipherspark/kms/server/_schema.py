"""The KMS database's schema: numbered migrations (re-exported as ``storage.MIGRATIONS``), and
the row decoders of the current schema (for the sealed selects of :mod:`._seal`).

Each entry is applied once, in order, inside one transaction; never edit a released entry,
append a new one instead.
"""

from __future__ import annotations

from cipherspark.kms.registry import DatasetRecord
from cipherspark.kms.server.permissions import Role
from cipherspark.kms.server.records import (
    AppRecord,
    CredentialRecord,
    SimulatedPlatformRecord,
)

__all__ = [
    "MIGRATIONS",
    "Row",
    "app_row",
    "credential_row",
    "dataset_row",
    "platform_row",
]

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE settings (
               name TEXT PRIMARY KEY,
               value BLOB NOT NULL)""",
            """CREATE TABLE apps (
               app_id TEXT PRIMARY KEY,
               name TEXT NOT NULL,
               key_salt BLOB NOT NULL,
               key_hash BLOB NOT NULL,
               created TEXT NOT NULL)""",
            """CREATE TABLE keys (
               name TEXT PRIMARY KEY,
               app_id TEXT NOT NULL REFERENCES apps(app_id),
               created TEXT NOT NULL,
               current_version INTEGER NOT NULL CHECK (current_version >= 1),
               min_decryption_version INTEGER NOT NULL DEFAULT 1,
               enabled INTEGER NOT NULL DEFAULT 1,
               deletion_date TEXT)""",
            """CREATE TABLE key_versions (
               key_name TEXT NOT NULL REFERENCES keys(name) ON DELETE CASCADE,
               version INTEGER NOT NULL,
               sealed BLOB NOT NULL,
               created TEXT NOT NULL,
               PRIMARY KEY (key_name, version))""",
            "CREATE INDEX keys_by_app ON keys(app_id, name)",
        ),
    ),
    # Attested key release: one JSON release policy per primary key (deleted with the key).
    (
        2,
        (
            """CREATE TABLE key_policies (
               key_name TEXT PRIMARY KEY REFERENCES keys(name) ON DELETE CASCADE,
               policy TEXT NOT NULL,
               updated TEXT NOT NULL)""",
        ),
    ),
    # Simulated TEE platforms the operator trusts (admin token): a policy's
    # simulated.platform_keys only count where they are registered here too.
    (
        3,
        (
            """CREATE TABLE simulated_platforms (
               public_key TEXT PRIMARY KEY CHECK (length(public_key) = 64),
               label TEXT NOT NULL,
               created TEXT NOT NULL)""",
        ),
    ),
    # Roles: an app has credentials, each an owner or a workload one, revocable; apps can be
    # disabled. Every existing app's API key becomes its owner credential, marked legacy (its
    # API key does not carry the credential id, so it is found by app id: at most one per app).
    (
        4,
        (
            """CREATE TABLE credentials (
               credential_id TEXT PRIMARY KEY,
               app_id TEXT NOT NULL REFERENCES apps(app_id) ON DELETE CASCADE,
               role TEXT NOT NULL CHECK (role IN ('owner', 'workload')),
               label TEXT NOT NULL DEFAULT '',
               key_salt BLOB NOT NULL,
               key_hash BLOB NOT NULL,
               legacy INTEGER NOT NULL DEFAULT 0 CHECK (legacy IN (0, 1)),
               created TEXT NOT NULL,
               revoked TEXT)""",
            "CREATE INDEX credentials_by_app ON credentials(app_id, created)",
            "CREATE UNIQUE INDEX credentials_legacy ON credentials(app_id) WHERE legacy = 1",
            """INSERT INTO credentials(credential_id, app_id, role, label, key_salt, key_hash,
                                       legacy, created)
               SELECT 'cred-' || lower(hex(randomblob(8))), app_id, 'owner',
                      'owner (API key from before roles)', key_salt, key_hash, 1, created
               FROM apps""",
            "ALTER TABLE apps ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE apps DROP COLUMN key_salt",
            "ALTER TABLE apps DROP COLUMN key_hash",
        ),
    ),
    # Tenancy: key names live in each app's namespace, so keys, their versions and policies are
    # keyed by (app_id, name). The old tables are renamed (their references follow), copied and
    # dropped, children first.
    (
        5,
        (
            "ALTER TABLE key_policies RENAME TO key_policies_v4",
            "ALTER TABLE key_versions RENAME TO key_versions_v4",
            "ALTER TABLE keys RENAME TO keys_v4",
            """CREATE TABLE keys (
               app_id TEXT NOT NULL REFERENCES apps(app_id),
               name TEXT NOT NULL,
               created TEXT NOT NULL,
               current_version INTEGER NOT NULL CHECK (current_version >= 1),
               min_decryption_version INTEGER NOT NULL DEFAULT 1,
               enabled INTEGER NOT NULL DEFAULT 1,
               deletion_date TEXT,
               PRIMARY KEY (app_id, name))""",
            """CREATE TABLE key_versions (
               app_id TEXT NOT NULL,
               key_name TEXT NOT NULL,
               version INTEGER NOT NULL,
               sealed BLOB NOT NULL,
               created TEXT NOT NULL,
               PRIMARY KEY (app_id, key_name, version),
               FOREIGN KEY (app_id, key_name) REFERENCES keys(app_id, name) ON DELETE CASCADE)""",
            """CREATE TABLE key_policies (
               app_id TEXT NOT NULL,
               key_name TEXT NOT NULL,
               policy TEXT NOT NULL,
               updated TEXT NOT NULL,
               PRIMARY KEY (app_id, key_name),
               FOREIGN KEY (app_id, key_name) REFERENCES keys(app_id, name) ON DELETE CASCADE)""",
            """INSERT INTO keys(app_id, name, created, current_version, min_decryption_version,
                               enabled, deletion_date)
               SELECT app_id, name, created, current_version, min_decryption_version, enabled,
                      deletion_date FROM keys_v4""",
            """INSERT INTO key_versions(app_id, key_name, version, sealed, created)
               SELECT k.app_id, v.key_name, v.version, v.sealed, v.created
               FROM key_versions_v4 v JOIN keys_v4 k ON k.name = v.key_name""",
            """INSERT INTO key_policies(app_id, key_name, policy, updated)
               SELECT k.app_id, p.key_name, p.policy, p.updated
               FROM key_policies_v4 p JOIN keys_v4 k ON k.name = p.key_name""",
            "DROP TABLE key_policies_v4",
            "DROP TABLE key_versions_v4",
            "DROP TABLE keys_v4",
            "CREATE INDEX keys_due ON keys(deletion_date) WHERE deletion_date IS NOT NULL",
        ),
    ),
    # Sealed store: every security-relevant row gets a seal (HMAC under a key derived from the root
    # key); one store seal covers them all and the audit head; state-changing operations stage
    # their audit entry in the outbox in the transaction of the change. The seals themselves
    # are computed in Python at open (``_store.SealedDb``: it needs the root key), which also
    # re-seals the primary-key versions with the app id in their associated data.
    (
        6,
        (
            *(
                f"ALTER TABLE {table} ADD COLUMN seal BLOB"
                for table in (
                    "settings",
                    "apps",
                    "credentials",
                    "keys",
                    "key_versions",
                    "key_policies",
                    "simulated_platforms",
                )
            ),
            """CREATE TABLE store_seal (
               id INTEGER PRIMARY KEY CHECK (id = 1),
               audit_seq INTEGER NOT NULL,
               audit_mac TEXT NOT NULL,
               mac BLOB NOT NULL)""",
            """CREATE TABLE audit_outbox (
               seq INTEGER PRIMARY KEY,
               line BLOB NOT NULL)""",
        ),
    ),
    # The dataset registry (issue 14, cipherspark.kms.registry): per app, the current commit
    # of the dataset at each location. Sealed like the other security rows (``_seal.TABLES``):
    # the table starts empty, so adding it leaves an existing store seal valid. No foreign key
    # to ``keys``: a record outlives its key's deletion (it then names a key nobody can use,
    # which readers refuse anyway).
    (
        7,
        (
            """CREATE TABLE datasets (
               app_id TEXT NOT NULL REFERENCES apps(app_id),
               location TEXT NOT NULL,
               dataset_id TEXT NOT NULL,
               key_name TEXT NOT NULL,
               generation INTEGER NOT NULL CHECK (generation >= 1),
               manifest_sha256 TEXT NOT NULL,
               wrapped_key_sha256 TEXT NOT NULL,
               updated TEXT NOT NULL,
               seal BLOB,
               PRIMARY KEY (app_id, location))""",
            "CREATE INDEX datasets_by_id ON datasets(app_id, dataset_id)",
        ),
    ),
)


# -- the current schema's rows, as records (read with ``_seal.TABLES``' selects) ----------------

Row = tuple[object, ...]


def app_row(row: Row) -> AppRecord:
    return AppRecord(str(row[0]), str(row[1]), str(row[2]), bool(row[3]))


def credential_row(row: Row) -> CredentialRecord:
    return CredentialRecord(
        credential_id=str(row[0]),
        app_id=str(row[1]),
        role=Role(str(row[2])),
        label=str(row[3]),
        key_salt=bytes(row[4]),  # type: ignore[call-overload]
        key_hash=bytes(row[5]),  # type: ignore[call-overload]
        created=str(row[6]),
        revoked=None if row[7] is None else str(row[7]),
        legacy=bool(row[8]),
    )


def platform_row(row: Row) -> SimulatedPlatformRecord:
    return SimulatedPlatformRecord(str(row[0]), str(row[1]), str(row[2]))


def dataset_row(row: Row) -> DatasetRecord:
    """A datasets row (app_id, location, dataset_id, key_name, generation, manifest_sha256,
    wrapped_key_sha256, updated, ...) as the registry's record (the app id is the caller's)."""
    return DatasetRecord(
        location=str(row[1]),
        dataset_id=str(row[2]),
        key_id=str(row[3]),
        generation=int(row[4]),  # type: ignore[call-overload]
        manifest_sha256=str(row[5]),
        wrapped_key_sha256=str(row[6]),
    )
