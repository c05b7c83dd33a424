"""docs/design.md "Keys", "config" (master_key_check), "Encryption of every encrypted object
and blob" and the blob ID of "Blobs and chunking", on fixed inputs."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import blake3
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupctl.errors import IntegrityError
from backupctl.repo.crypto import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    Cipher,
    KeyMaterial,
    MasterKeys,
    master_key_check,
    read_key_file,
    unwrap_master_keys,
    wrap_master_keys,
)

from .fixed import hkdf_sha256, load, master_keys

WRAP_AAD = b"backupctl master keys v1"


def test_blake3_modes_are_the_standard_ones() -> None:
    """Keyed hash (blob IDs) and derive-key mode (master_key_check) as in BLAKE3's own vectors."""
    v = load("crypto")["blake3_official"]
    for case in v["cases"]:
        data = bytes(i % 251 for i in range(case["input_len"]))
        assert blake3.blake3(data).hexdigest() == case["hash"]
        assert blake3.blake3(data, key=v["key"].encode()).hexdigest() == case["keyed_hash"]
        assert blake3.blake3(data, derive_key_context=v["context_string"]).hexdigest() == case["derive_key"]


def test_blob_id_is_keyed_blake3_with_id_key() -> None:
    v = load("crypto")["blob_id"]
    cipher = Cipher(master_keys())
    assert cipher.blob_id(v["plaintext"].encode()).hex() == v["id"]
    assert blake3.blake3(v["plaintext"].encode(), key=master_keys().id_key).hexdigest() == v["id"]


def test_master_key_check() -> None:
    keys = master_keys()
    want = load("crypto")["master_key_check"]
    assert master_key_check(keys) == want
    ctx = "backupctl master key check v1"
    assert blake3.blake3(keys.enc_key + keys.id_key, derive_key_context=ctx).hexdigest() == want


def test_key_file_kek_is_hkdf_sha256(tmp_path: Path) -> None:
    v = load("crypto")["key_file"]
    path = tmp_path / "key"
    path.write_text(v["text"])
    path.chmod(0o600)
    secret = read_key_file(path)
    assert secret.hex() == v["secret"]
    salt = bytes.fromhex(v["salt"])
    assert KeyMaterial("key_file", secret).derive_kek(salt).hex() == v["kek"]
    assert hkdf_sha256(secret, salt, v["info"].encode()).hex() == v["kek"]


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    from backupctl.errors import ConfigError

    path = tmp_path / "key"
    path.write_text(load("crypto")["key_file"]["text"])
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_key_file(path)


def test_passphrase_kek_is_scrypt() -> None:
    v = load("crypto")["passphrase"]
    assert (SCRYPT_N, SCRYPT_R, SCRYPT_P) == (v["n"], v["r"], v["p"]) == (32768, 8, 1)
    salt = bytes.fromhex(v["salt"])
    secret = v["passphrase"].encode()
    assert KeyMaterial("passphrase", secret).derive_kek(salt).hex() == v["kek"]
    independent = hashlib.scrypt(secret, salt=salt, n=v["n"], r=v["r"], p=v["p"], dklen=32, maxmem=64 << 20)
    assert independent.hex() == v["kek"]


@pytest.mark.parametrize(
    ("which", "kind", "kdf"),
    [("key_file", "key_file", "hkdf-sha256"), ("passphrase", "passphrase", "scrypt")],
)
def test_a_fixed_slot_opens_to_the_fixed_master_keys(which: str, kind: str, kdf: str) -> None:
    v = load("crypto")[which]
    secret = bytes.fromhex(v["secret"]) if kind == "key_file" else v["passphrase"].encode()
    slot = v["slot"].encode()
    assert unwrap_master_keys(slot, KeyMaterial(kind, secret)) == master_keys()
    # independently: data = nonce(12) || AES-256-GCM(KEK, enc_key || id_key, aad)
    doc = json.loads(slot)
    assert doc["kdf"] == kdf
    assert base64.b64decode(doc["salt"]).hex() == v["salt"]
    data = base64.b64decode(doc["data"])
    raw = AESGCM(bytes.fromhex(v["kek"])).decrypt(data[:12], data[12:], WRAP_AAD)
    keys = master_keys()
    assert raw == keys.enc_key + keys.id_key


def test_wrong_key_material_opens_nothing_and_a_damaged_slot_is_damage() -> None:
    v = load("crypto")["key_file"]
    slot = v["slot"].encode()
    assert unwrap_master_keys(slot, KeyMaterial("key_file", bytes(32))) is None
    # a passphrase is never tried on a key-file slot
    assert unwrap_master_keys(slot, KeyMaterial("passphrase", b"x")) is None
    with pytest.raises(IntegrityError, match="damaged key slot"):
        unwrap_master_keys(slot[: len(slot) // 2], KeyMaterial("key_file", bytes.fromhex(v["secret"])))


@pytest.mark.parametrize("kind", ["key_file", "passphrase"])
def test_wrap_unwrap_round_trip(kind: str) -> None:
    keys = MasterKeys.generate()
    material = KeyMaterial(kind, os.urandom(32))
    slot = wrap_master_keys(keys, material)
    doc = json.loads(slot)
    assert set(doc) == {"kdf", "salt", "scrypt", "data"}
    assert len(base64.b64decode(doc["salt"])) == 32
    assert len(base64.b64decode(doc["data"])) == 12 + 64 + 16
    assert doc["scrypt"] == ({"n": 32768, "r": 8, "p": 1} if kind == "passphrase" else None)
    assert unwrap_master_keys(slot, material) == keys
    # the slot's KEK is the documented derivation of its own salt
    kek = material.derive_kek(base64.b64decode(doc["salt"]))
    data = base64.b64decode(doc["data"])
    assert AESGCM(kek).decrypt(data[:12], data[12:], WRAP_AAD) == keys.enc_key + keys.id_key


def test_aes_gcm_object_layout() -> None:
    """nonce(12) || ciphertext || tag(16) with enc_key, recomputed from the primitive."""
    v = load("crypto")["aes_gcm"]
    keys = master_keys()
    nonce, pt, aad = bytes.fromhex(v["nonce"]), v["plaintext"].encode(), v["aad"].encode()
    obj = bytes.fromhex(v["object"])
    assert obj == nonce + AESGCM(keys.enc_key).encrypt(nonce, pt, aad)
    assert len(obj) == 12 + len(pt) + 16
    cipher = Cipher(keys)
    assert cipher.decrypt(obj, aad, "vector") == pt
    with pytest.raises(IntegrityError, match="authentication failed"):
        cipher.decrypt(obj, b"pack-header", "vector")
    with pytest.raises(IntegrityError, match="truncated"):
        cipher.decrypt(obj[:27], aad, "vector")
    # what Cipher.encrypt writes (random nonce) the primitive reads back
    mine = cipher.encrypt(pt, aad)
    assert AESGCM(keys.enc_key).decrypt(mine[:12], mine[12:], aad) == pt
