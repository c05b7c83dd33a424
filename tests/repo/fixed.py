"""The committed vectors (tests/repo/vectors/*.json) and the inputs they are defined on.

The vectors were produced once and are the repository format: a test that disagrees with
them means the code changed the format, not that the vectors need regenerating. Each test
checks a vector both through backupctl's API and, where the format allows, recomputed from
the primitives (hashlib, hmac, `cryptography`'s AESGCM, zstandard, blake3) as an
independent reader of docs/design.md would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import cache
from pathlib import Path
from typing import Any

from backupctl.repo.crypto import MasterKeys

VECTORS = Path(__file__).resolve().parent / "vectors"


@cache
def load(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text())


def master_keys() -> MasterKeys:
    mk = load("crypto")["master_keys"]
    return MasterKeys(bytes.fromhex(mk["enc_key"]), bytes.fromhex(mk["id_key"]))


@cache
def chunker_input() -> bytes:
    """R[:zeros_at] || zeros_len zero bytes || R[zeros_at:], R = SHAKE256(seed) (random_len bytes).

    About 23 MiB: random data cut by the rolling hash, and a zero run longer than the data
    maximum, which the hash never cuts (so max_size does)."""
    v = load("chunker")
    r = hashlib.shake_256(v["seed"].encode()).digest(v["random_len"])
    at = v["zeros_at"]
    return r[:at] + bytes(v["zeros_len"]) + r[at:]


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 with the standard library only (independent of `cryptography`)."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes((counter,)), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]
