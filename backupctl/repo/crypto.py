"""Keys and authenticated encryption.

A repository has one set of master keys (random, 2 x 32 bytes):

* ``enc_key``: AES-256-GCM key for every stored blob and metadata object;
* ``id_key``: BLAKE3 key for chunk IDs, so an ID reveals nothing about content to
  someone without the key (no confirmation-of-file attacks).

The master keys are stored in ``keys/<slot-id>`` objects, wrapped (AES-256-GCM) by a
key-encryption key (KEK) derived from what the user holds:

* a key file (32 random bytes, base64): KEK = HKDF-SHA256(file bytes, salt, info);
* a passphrase: KEK = scrypt(passphrase, salt, n=2**15, r=8, p=1).

Wrong key material fails GCM authentication on every slot, which is reported as
WrongKeyError, never as damage.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from backupctl.errors import ConfigError, IntegrityError, WrongKeyError

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_HKDF_INFO = b"backupctl key-file kek v1"


@dataclass(frozen=True)
class MasterKeys:
    enc_key: bytes
    id_key: bytes

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32))


class Cipher:
    """AES-256-GCM with a random 96-bit nonce per message; layout nonce || ciphertext || tag.

    Random nonces are safe here: a repository encrypts far fewer than 2**32 messages
    under one key. The AAD binds a ciphertext to its name (blob ID, object kind).
    """

    def __init__(self, keys: MasterKeys) -> None:
        self.keys = keys
        self._aead = AESGCM(keys.enc_key)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes, what: str) -> bytes:
        if len(blob) < OVERHEAD:
            raise IntegrityError(f"{what}: truncated ({len(blob)} bytes)")
        try:
            return self._aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError(f"{what}: authentication failed (damaged or tampered)") from None

    def blob_id(self, data: bytes | memoryview) -> bytes:
        """Keyed BLAKE3 of the plaintext: the chunk's 32-byte ID."""
        return blake3.blake3(data, key=self.keys.id_key).digest()


# ---- key material held by the user -------------------------------------------------


def generate_key_file(path: Path) -> None:
    """Create a new key file with mode 0600; never overwrites an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            "# backupctl repository key. Keep a copy somewhere safe: without it no backup can be read.\n"
        )
        fh.write(base64.b64encode(os.urandom(32)).decode() + "\n")


# For a first set-up the key does not exist yet: init creates it (and a config).
KEY_MISSING_HINT = "restore it from your safe copy; for a first set-up, `backupctl init` creates a new key"


def read_key_file(path: Path) -> bytes:
    """The key material of a key file that only its owner can read or write (as ssh demands)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist", hint=KEY_MISSING_HINT) from None
    except PermissionError:
        raise ConfigError(f"key file {path} is not readable (permission denied)") from None
    if mode & 0o077:
        # Whoever can read the key file can read every backup; whoever can write it can
        # make the next backups unreadable. Refused like ssh refuses an open private key.
        how = "readable" if mode & 0o044 else "writable"
        raise ConfigError(f"key file {path} is {how} by others (mode {mode:04o}): run chmod 600 {path}")
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist", hint=KEY_MISSING_HINT) from None
    except PermissionError:
        raise ConfigError(f"key file {path} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        lines = []  # binary content: reported below like any other wrong content
    payload = [ln for ln in lines if ln and not ln.startswith("#")]
    try:
        raw = base64.b64decode(payload[0], validate=True) if payload else b""
    except ValueError:
        raw = b""
    if len(raw) < 16:
        raise ConfigError(
            f"key file {path} is not a backupctl key file (expected base64 key material)",
            hint="`backupctl init` writes one; or: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE",
        )
    return raw


@dataclass(frozen=True)
class KeyMaterial:
    """What the user supplies: the bytes of a key file, or a passphrase."""

    kind: str  # "key_file" | "passphrase"
    secret: bytes

    def derive_kek(self, salt: bytes) -> bytes:
        if self.kind == "key_file":
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_HKDF_INFO).derive(self.secret)
        return Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(self.secret)


def wrap_master_keys(keys: MasterKeys, material: KeyMaterial) -> bytes:
    """A `keys/<slot>` object: JSON with the KDF parameters and the wrapped keys."""
    salt = os.urandom(32)
    kek = material.derive_kek(salt)
    nonce = os.urandom(NONCE_SIZE)
    wrapped = AESGCM(kek).encrypt(nonce, keys.enc_key + keys.id_key, b"backupctl master keys v1")
    doc = {
        "kdf": "hkdf-sha256" if material.kind == "key_file" else "scrypt",
        "salt": base64.b64encode(salt).decode(),
        "scrypt": {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P} if material.kind == "passphrase" else None,
        "data": base64.b64encode(nonce + wrapped).decode(),
    }
    return json.dumps(doc, indent=1).encode()


def unwrap_master_keys(slot: bytes, material: KeyMaterial, name: str = "key slot") -> MasterKeys | None:
    """The master keys if `material` opens this slot, else None.

    A slot that is not a well-formed key slot (truncated, garbage, wrong fields) raises
    IntegrityError naming `name`: damage, not a wrong key."""
    try:
        doc = json.loads(slot)
        if not isinstance(doc, dict) or "kdf" not in doc:
            raise ValueError("not a key slot object")
        want = "hkdf-sha256" if material.kind == "key_file" else "scrypt"
        if doc["kdf"] != want:
            return None
        salt = base64.b64decode(doc["salt"], validate=True)
        data = base64.b64decode(doc["data"], validate=True)
        if material.kind == "passphrase":
            params = doc.get("scrypt") or {}
            kek = Scrypt(
                salt=salt,
                length=32,
                n=int(params.get("n", SCRYPT_N)),
                r=int(params.get("r", SCRYPT_R)),
                p=int(params.get("p", SCRYPT_P)),
            ).derive(material.secret)
        else:
            kek = material.derive_kek(salt)
        if len(data) < OVERHEAD + 64:
            raise ValueError("wrapped keys too short")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise IntegrityError(f"{name}: damaged key slot ({_reason(exc)})") from None
    try:
        raw = AESGCM(kek).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], b"backupctl master keys v1")
    except InvalidTag:
        return None
    return MasterKeys(raw[:32], raw[32:64])


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return "not valid JSON: truncated or overwritten"
    if isinstance(exc, KeyError):
        return f"field {exc.args[0]!r} missing"
    return str(exc) or type(exc).__name__


def master_key_check(keys: MasterKeys) -> str:
    """A fingerprint of the master keys, stored in the repository config so that a slot
    holding other keys (a losing creator's) is told apart from the repository's own.
    A BLAKE3 derivation of 512 random bits: it reveals nothing usable about the keys."""
    return blake3.blake3(
        keys.enc_key + keys.id_key, derive_key_context="backupctl master key check v1"
    ).hexdigest()


def no_slot_opened(what: str) -> WrongKeyError:
    return WrongKeyError(
        f"the {what} does not open this repository",
        hint="check encryption.key_file / passphrase in the config; backups need the key they were made with",
    )
