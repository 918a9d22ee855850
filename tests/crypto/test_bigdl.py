"""BigDL PPML files: read from vectors written by an independent generator, verified first.

The vectors (tests/crypto/bigdl_vectors.py) use no cipherspark code. The attacker here edits
ciphertext, the tag, the header or the length, or holds the wrong key: each must be refused by
file name with no output left behind.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest

from cipherspark.crypto._bigdl import (
    BigDLFile,
    ExportedDataKeys,
    Layout,
    PlaintextPrimaryKey,
    SimpleKms,
    file_keys,
)
from cipherspark.errors import CredentialsError, FormatError, IntegrityError
from cipherspark.files import decrypt_path
from cipherspark.jobs.migrate import BigDLSource, check_bigdl, migrate_bigdl
from cipherspark.kms import LocalKms
from tests.conftest import TEST_KEY
from tests.crypto import bigdl_vectors as bv


@pytest.fixture
def vectors(tmp_path: Path) -> bv.Vectors:
    return bv.write_vectors(tmp_path / "bigdl")


def simple(vectors: bv.Vectors) -> SimpleKms:
    return SimpleKms.from_material(bv.APP_ID, bv.API_KEY, vectors.simple_primary_key.read_bytes())


def plain_key() -> PlaintextPrimaryKey:
    return PlaintextPrimaryKey.from_base64(bv.PRIMARY_KEY_PLAINTEXT)


def decrypted(path: Path, kms: LocalKms, tmp_path: Path) -> bytes:
    out = tmp_path / "check.csv"
    decrypt_path(path, out, kms, key_id=TEST_KEY)
    data = out.read_bytes()
    out.unlink()
    return data


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- the key schedule, against the generator's restatement -------------------------------------


def test_simplekms_unwrap_matches_the_generator() -> None:
    rng = random.Random(3)
    pk = bv.simple_primary_key(rng)
    for _ in range(50):
        wrapped = bv.simple_wrap(pk, rng)
        assert len(wrapped) == 32
        assert SimpleKms(pk).unwrap(wrapped) == bv.simple_unwrap(pk, wrapped)


def test_the_documented_simplekms_example_shape() -> None:
    # The notes' example ciphertext: two-digit codes 48..57, 32 characters.
    data_key = SimpleKms("1234567890120000").unwrap("49554850515352504848545753575357")
    assert len(data_key) == 32
    assert all(data_key[i : i + 2] in {str(c) for c in range(48, 58)} for i in range(0, 32, 2))


def test_file_keys_pad_as_java_copy_of_range() -> None:
    mac, aes = file_keys("A" * 24, Layout.V2)
    assert mac == b"A" * 16 and aes == b"A" * 8 + b"\0" * 8
    mac, aes = file_keys("B" * 32, Layout.V1)
    assert aes == b"B" * 16 + b"\0" * 16


def test_a_primary_key_file_of_another_app_is_refused(vectors: bv.Vectors) -> None:
    with pytest.raises(CredentialsError, match="does not belong to this APP ID"):
        SimpleKms.from_material("999999999999", bv.API_KEY, vectors.simple_primary_key.read_bytes())


@pytest.mark.parametrize("material", [b"", b"12345\n", b"abcdefghijklmnopq\n", b"\xff" * 20])
def test_a_malformed_primary_key_file_is_refused(material: bytes) -> None:
    with pytest.raises(CredentialsError):
        SimpleKms.from_material(bv.APP_ID, bv.API_KEY, material)


# -- reading ----------------------------------------------------------------------------------


def test_each_layout_is_detected_and_decrypts(vectors: bv.Vectors) -> None:
    cases = [
        (sorted(vectors.v2_folder.glob("part-*"))[0], simple(vectors), None, Layout.V2),
        (vectors.v2_plaintext_key_file, plain_key(), None, Layout.V2),
        (vectors.v1_file, simple(vectors), vectors.v1_data_key.read_text().strip(), Layout.V1),
    ]
    expected = [vectors.parts[0], vectors.csv, vectors.csv]
    for (path, keys, v1, layout), plain in zip(cases, expected, strict=True):
        with BigDLFile(path, keys, v1_data_key=v1) as bigdl:
            assert bigdl.layout is layout
            bigdl.verify()
            assert b"".join(bigdl.plaintext()) == plain


def test_plaintext_before_verify_is_refused(vectors: bv.Vectors) -> None:
    with BigDLFile(vectors.v2_plaintext_key_file, plain_key()) as bigdl:
        with pytest.raises(IntegrityError, match="not verified"):
            next(bigdl.plaintext())


def test_nativeaescbc_needs_the_explicit_unsafe_choice(vectors: bv.Vectors) -> None:
    with pytest.raises(FormatError, match="unsafe-unauthenticated-input"):
        BigDLFile(vectors.native_file, plain_key())
    with BigDLFile(vectors.native_file, plain_key(), allow_unauthenticated=True) as bigdl:
        assert bigdl.layout is Layout.NATIVE_AES_CBC
        assert not bigdl.layout.authenticated
        bigdl.verify()
        assert b"".join(bigdl.plaintext()) == vectors.csv


def test_nativeaescbc_needs_the_plaintext_primary_key(vectors: bv.Vectors) -> None:
    with pytest.raises(CredentialsError, match="plaintext primary key"):
        BigDLFile(vectors.native_file, simple(vectors), allow_unauthenticated=True)


def test_v1_without_its_data_key_file_is_refused(vectors: bv.Vectors) -> None:
    with pytest.raises(CredentialsError, match=r"v1\.csv\.cbc.*data-key file"):
        BigDLFile(vectors.v1_file, simple(vectors))


def test_a_plaintext_csv_is_not_taken_for_bigdl(tmp_path: Path, vectors: bv.Vectors) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(vectors.csv)
    with pytest.raises(FormatError, match=r"people\.csv: not a BigDL"):
        BigDLFile(path, plain_key())


def test_a_damaged_v2_header_is_ambiguous_and_refused(vectors: bv.Vectors) -> None:
    path = vectors.v2_plaintext_key_file
    flip(path, 399)  # the last fill byte
    with pytest.raises(FormatError, match=r"plain-key\.csv\.cbc: starts like a BigDL v2"):
        BigDLFile(path, plain_key(), allow_unauthenticated=True)


def test_the_mac_is_checked_in_the_second_pass_too(vectors: bv.Vectors) -> None:
    path = vectors.v2_plaintext_key_file
    with BigDLFile(path, plain_key()) as bigdl:
        bigdl.verify()
        flip(path, 500)  # changed after it verified (same inode: pread sees it)
        with pytest.raises(IntegrityError, match="HMAC does not verify"):
            b"".join(bigdl.plaintext())


# -- migration ---------------------------------------------------------------------------------


def test_a_v2_folder_migrates_exactly(tmp_path: Path, kms: LocalKms, vectors: bv.Vectors) -> None:
    dst = tmp_path / "people.cspk"
    result = migrate_bigdl(vectors.v2_folder, dst, kms, TEST_KEY, BigDLSource(simple(vectors)))
    assert result.files == len(vectors.parts) and result.unverified == ()
    assert result.dataset is not None
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        [p.name.removesuffix(".cbc") + ".cspk" for p in vectors.v2_folder.glob("part-*")]
        + ["_manifest.cspk"]
    )
    # The header is written once: the original CSV, byte for byte.
    assert decrypted(dst, kms, tmp_path) == vectors.csv


@pytest.mark.parametrize("which", ["v1", "plain", "native"])
def test_single_files_migrate_exactly(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors, which: str
) -> None:
    source, src = {
        "v1": (BigDLSource(simple(vectors), vectors.v1_data_key.read_text()), vectors.v1_file),
        "plain": (BigDLSource(plain_key()), vectors.v2_plaintext_key_file),
        "native": (BigDLSource(plain_key(), allow_unauthenticated=True), vectors.native_file),
    }[which]
    dst = tmp_path / "out.csv.cspk"
    result = migrate_bigdl(src, dst, kms, TEST_KEY, source)
    assert result.unverified == ((src,) if which == "native" else ())
    assert decrypted(dst, kms, tmp_path) == vectors.csv


def _second_part(vectors: bv.Vectors) -> Path:
    return sorted(vectors.v2_folder.glob("part-*"))[1]


def _tamper_ciphertext(path: Path) -> None:
    flip(path, 400 + 20)


def _tamper_tag(path: Path) -> None:
    flip(path, path.stat().st_size - 1)


def _truncate(path: Path) -> None:
    # A whole block less: the length still fits the layout, so only the MAC can tell.
    path.write_bytes(path.read_bytes()[: -32 - 16] + path.read_bytes()[-32:])


def _truncate_ragged(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def _drop_first_block(path: Path) -> None:
    # The last two blocks (hence the padding) are untouched: only the MAC can tell.
    data = path.read_bytes()
    path.write_bytes(data[:400] + data[416:])


@pytest.mark.parametrize(
    "tamper",
    [_tamper_ciphertext, _tamper_tag, _truncate, _truncate_ragged, _drop_first_block],
    ids=lambda f: f.__name__,
)
def test_a_tampered_part_refuses_the_whole_migration(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors, tamper: object
) -> None:
    victim = _second_part(vectors)
    assert callable(tamper)
    tamper(victim)
    dst = tmp_path / "people.cspk"
    with pytest.raises((IntegrityError, FormatError), match=victim.name) as info:
        migrate_bigdl(vectors.v2_folder, dst, kms, TEST_KEY, BigDLSource(simple(vectors)))
    assert "nothing written" in str(info.value)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "bigdl"] == ["kms"]


def test_a_wrong_simplekms_primary_key_is_refused(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors
) -> None:
    # Same APP ID, other 4 random digits: SimpleKMS's HMAC key comes from the APP ID's digits
    # alone, so the MAC verifies; the AES key differs and the padding tells (255 in 256; the
    # seed is fixed, and this key's last block does not happen to unpad).
    right = simple(vectors).primary_key
    wrong = SimpleKms(bv.APP_ID + ("0000" if not right.endswith("0000") else "1111"))
    dst = tmp_path / "people.cspk"
    with pytest.raises(IntegrityError, match=r"part-00000.*padding is invalid: the BigDL key"):
        migrate_bigdl(vectors.v2_folder, dst, kms, TEST_KEY, BigDLSource(wrong))
    assert not dst.exists()
    checks = check_bigdl(vectors.v2_folder, BigDLSource(wrong))
    assert not any(c.ok for c in checks)


def test_a_primary_key_of_other_leading_digits_fails_the_mac(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors
) -> None:
    wrong = SimpleKms("9" + simple(vectors).primary_key[1:])
    with pytest.raises(IntegrityError, match=r"part-00000.*HMAC does not verify"):
        migrate_bigdl(vectors.v2_folder, tmp_path / "o", kms, TEST_KEY, BigDLSource(wrong))
    assert not (tmp_path / "o").exists()


def test_a_wrong_plaintext_primary_key_is_refused(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors
) -> None:
    wrong = PlaintextPrimaryKey.from_base64(base64.b64encode(b"\x01" * 16).decode())
    dst = tmp_path / "out.cspk"
    with pytest.raises(IntegrityError, match=r"plain-key\.csv\.cbc"):
        migrate_bigdl(vectors.v2_plaintext_key_file, dst, kms, TEST_KEY, BigDLSource(wrong))
    assert not dst.exists()


def test_the_header_key_is_used_not_the_meta(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors
) -> None:
    # .meta names another data key (as after an append): migration still verifies.
    checks = check_bigdl(vectors.v2_folder, BigDLSource(simple(vectors)))
    assert [c.path.name for c in checks] == sorted(p.name for p in vectors.v2_folder.glob("part-*"))
    assert all(c.ok and c.verified and c.layout is Layout.V2 for c in checks)


def test_check_reports_every_file(vectors: bv.Vectors) -> None:
    victim = _second_part(vectors)
    _tamper_ciphertext(victim)
    checks = check_bigdl(vectors.v2_folder, BigDLSource(simple(vectors)))
    assert [c.ok for c in checks] == [True, False, True]
    assert checks[1].problem is not None and victim.name in checks[1].problem


def test_a_large_file_streams(tmp_path: Path, kms: LocalKms) -> None:
    # Several read chunks (1 MiB each), so block boundaries fall inside the stream.
    rng = random.Random(5)
    plain = rng.randbytes(3 * (1 << 20) + 123)
    wrapped, data_key = bv.plaintext_wrap(bv.PRIMARY_KEY_PLAINTEXT, rng)
    src = tmp_path / "big.bin.cbc"
    src.write_bytes(bv.v2_file(plain, wrapped, data_key, rng.randbytes(16)))
    dst = tmp_path / "big.cspk"
    result = migrate_bigdl(src, dst, kms, TEST_KEY, BigDLSource(plain_key()))
    assert result.plaintext_bytes == len(plain)
    assert decrypted(dst, kms, tmp_path) == plain


def test_a_part_changed_after_the_check_leaves_nothing(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors
) -> None:
    # The attacker edits a part between the verifying pass and the decrypting pass: the second
    # pass recomputes the MAC, fails, and the staged output is removed.
    parts = sorted(vectors.v2_folder.glob("part-*"))
    first_pass = sum(p.stat().st_size - 432 for p in parts)
    seen = 0

    def progress(n: int) -> None:
        nonlocal seen
        seen += n
        if seen == first_pass:
            flip(parts[-1], 420)

    dst = tmp_path / "people.cspk"
    with pytest.raises(IntegrityError, match=parts[-1].name):
        migrate_bigdl(
            vectors.v2_folder, dst, kms, TEST_KEY, BigDLSource(simple(vectors)), progress=progress
        )
    assert seen > first_pass
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "bigdl"] == ["kms"]


def test_exported_data_keys_migrate_and_are_checked_by_the_mac(
    tmp_path: Path, kms: LocalKms, vectors: bv.Vectors
) -> None:
    keys = ExportedDataKeys.from_json(vectors.exported_keys.read_bytes())
    dst = tmp_path / "out.cspk"
    migrate_bigdl(vectors.exported_file, dst, kms, TEST_KEY, BigDLSource(keys))
    assert decrypted(dst, kms, tmp_path) == vectors.csv
    # A wrong export (another file's key) fails the MAC; a missing one is named.
    [(wrapped, _)] = keys.keys.items()
    wrong = ExportedDataKeys({wrapped: base64.b64encode(b"\x07" * 32).decode()})
    with pytest.raises(IntegrityError, match=r"ehsm\.csv\.cbc: the HMAC does not verify"):
        migrate_bigdl(vectors.exported_file, tmp_path / "o2", kms, TEST_KEY, BigDLSource(wrong))
    # (Every file is checked first: the refusal is the migration's, naming the file.)
    with pytest.raises(IntegrityError, match=r"plain-key\.csv\.cbc: no exported data key"):
        migrate_bigdl(
            vectors.v2_plaintext_key_file, tmp_path / "o3", kms, TEST_KEY, BigDLSource(keys)
        )
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


@pytest.mark.parametrize("data", [b"", b"[]", b"{}", b'{"a": 1}', b"\xff"])
def test_a_malformed_export_is_refused(data: bytes) -> None:
    with pytest.raises(CredentialsError):
        ExportedDataKeys.from_json(data)
