"""Fast, seeded generation of realistic compressible text for the benchmark trees.

Text is assembled from token vocabularies with numpy: every record format (CSV, JSON lines,
log lines, prose) is a row of columns, each column drawn from its own vocabulary with a
Zipf-like skew, and the rows are turned into bytes by one vectorised gather. This runs at a
few hundred MB/s, which is what keeps a 2 GiB tree generation well under a minute, and the
result compresses about 3x with zstd level 3, like real exports and logs.

The same (seed, stream id) always yields the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    import numpy as np
except ImportError:  # pragma: no cover - a set-up problem, said plainly
    raise SystemExit("the benchmark tree generator needs numpy: pip install numpy") from None

VOCAB_SEED = 20240611

_LOOKUP_SIZE = 1 << 20
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiouy"


@dataclass
class _Vocab:
    """A contiguous range [start, start+size) of the shared token table."""

    start: int
    size: int
    # Token numbers repeated in proportion to their probability, or None for uniform.
    lookup: np.ndarray | None


class TokenTable:
    """All tokens of all vocabularies in one byte buffer with offsets and lengths."""

    def __init__(self) -> None:
        self._tokens: list[bytes] = []
        self.vocabs: dict[str, _Vocab] = {}
        self.lens = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros((0, 0), dtype=np.uint8)
        self.valid = np.zeros((0, 0), dtype=bool)

    def add(self, name: str, tokens: list[bytes], zipf: float | None = None) -> None:
        start = len(self._tokens)
        self._tokens.extend(tokens)
        lookup = None
        if zipf is not None:
            # Sampling table: each token appears in proportion to its Zipf weight, so a draw
            # is one uniform integer and one lookup (much faster than inverse-CDF search).
            weights = 1.0 / np.arange(1, len(tokens) + 1, dtype=np.float64) ** zipf
            counts = np.maximum(1, np.round(weights / weights.sum() * _LOOKUP_SIZE)).astype(np.int64)
            lookup = np.repeat(np.arange(len(tokens), dtype=np.int32), counts)
        self.vocabs[name] = _Vocab(start, len(tokens), lookup)

    def freeze(self) -> None:
        self.lens = np.array([len(t) for t in self._tokens], dtype=np.int64)
        width = int(self.lens.max())
        # One fixed-width row per token: rendering gathers rows, then keeps the real bytes.
        self.rows = np.zeros((len(self._tokens), width), dtype=np.uint8)
        for i, tok in enumerate(self._tokens):
            self.rows[i, : len(tok)] = np.frombuffer(tok, dtype=np.uint8)
        self.valid = np.arange(width)[None, :] < self.lens[:, None]

    def draw(self, rng: np.random.Generator, name: str, n: int) -> np.ndarray:
        v = self.vocabs[name]
        if v.size == 1:
            return np.full(n, v.start, dtype=np.int64)
        if v.lookup is None:
            return v.start + rng.integers(0, v.size, n, dtype=np.int64)
        return v.start + v.lookup[rng.integers(0, len(v.lookup), n)].astype(np.int64)

    def render(self, idx: np.ndarray) -> bytes:
        """Concatenate the tokens idx[0], idx[1], ... into bytes (vectorised gather)."""
        width = int(self.lens[idx].max()) if len(idx) else 0
        return self.rows[idx, :width][self.valid[idx, :width]].tobytes()


def _words(rng: np.random.Generator, n: int) -> list[str]:
    out: set[str] = set()
    result: list[str] = []
    while len(result) < n:
        syllables = int(rng.integers(1, 4))
        w = "".join(
            _CONSONANTS[rng.integers(0, len(_CONSONANTS))] + _VOWELS[rng.integers(0, len(_VOWELS))]
            for _ in range(syllables)
        )
        if rng.random() < 0.4:
            w += _CONSONANTS[rng.integers(0, len(_CONSONANTS))]
        if w not in out:
            out.add(w)
            result.append(w)
    return result


def build_table() -> TokenTable:
    """The fixed vocabularies; independent of the tree seed so every tree shares them."""
    rng = np.random.default_rng(VOCAB_SEED)
    t = TokenTable()
    words = _words(rng, 30000)
    first = [w.capitalize() for w in _words(rng, 3000)]
    last = [w.capitalize() + "son" if i % 3 == 0 else w.capitalize() for i, w in enumerate(_words(rng, 8000))]
    cities = [w.capitalize() for w in _words(rng, 600)]
    products = [f"{words[i]}-{words[i + 1]}" for i in range(0, 8000, 2)]
    events = ["login", "logout", "view", "click", "purchase", "refund", "search", "signup", "error", "upload"]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
    services = ["api", "auth", "billing", "search", "worker", "gateway", "mailer", "cache"]
    paths = ["/" + "/".join(words[j : j + int(rng.integers(1, 4))]) for j in range(0, 6000, 3)]

    # Prose.
    t.add("word", [w.encode() + b" " for w in words], zipf=1.05)
    t.add("punct", [b". ", b".\n", b", ", b".\n\n", b"; ", b"? "], zipf=1.0)
    # CSV: id,date,first,last,city,product,qty,amount,status
    t.add("csv_id", [f"{i},".encode() for i in range(100000, 200000)])
    t.add("csv_date", [f"2024-{m:02d}-{d:02d},".encode() for m in range(1, 13) for d in range(1, 29)])
    t.add("first_c", [f.encode() + b"," for f in first], zipf=0.9)
    t.add("last_c", [x.encode() + b"," for x in last], zipf=0.8)
    t.add("city_c", [c.encode() + b"," for c in cities], zipf=1.0)
    t.add("product_c", [p.encode() + b"," for p in products], zipf=1.0)
    t.add("qty_c", [f"{q},".encode() for q in range(1, 50)], zipf=1.3)
    t.add("amount_c", [f"{a / 100:.2f},".encode() for a in rng.integers(99, 99999, 20000)])
    t.add(
        "status_nl",
        [b"paid\n", b"paid\n", b"shipped\n", b"pending\n", b"cancelled\n", b"refunded\n"],
        zipf=1.2,
    )
    # JSON lines: {"ts":"2024-..T..","user":123,"event":"x","item":"p","value":1.23,"city":"c"}
    t.add("j_open", [b'{"ts":"2024-'])
    t.add("j_date", [f"{m:02d}-{d:02d}T".encode() for m in range(1, 13) for d in range(1, 29)])
    t.add("time", [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}".encode() for s in range(0, 86400, 1)])
    t.add("j_user", [f'Z","user":{u},'.encode() for u in rng.integers(1000, 999999, 200000)])
    t.add("j_event", [f'"event":"{e}",'.encode() for e in events], zipf=1.0)
    t.add("j_item", [f'"item":"{p}",'.encode() for p in products], zipf=1.0)
    t.add("j_value", [f'"value":{a / 100:.2f},'.encode() for a in rng.integers(1, 1000000, 200000)])
    t.add("j_city", [f'"city":"{c}"}}\n'.encode() for c in cities], zipf=1.0)
    # Log lines: 2024-05-01 12:00:00,123 INFO [api] GET /a/b 200 12ms user=... msg words
    t.add("l_date", [f"2024-05-{d:02d} ".encode() for d in range(1, 29)])
    t.add("l_ms", [f",{ms:03d} ".encode() for ms in range(1000)])
    t.add("l_level", [f"{lv} ".encode() for lv in levels])
    t.add("l_svc", [f"[{s}] ".encode() for s in services], zipf=0.8)
    t.add(
        "l_req",
        [f"{m} {p} ".encode() for m in ("GET", "GET", "POST", "PUT", "DELETE") for p in paths],
        zipf=1.1,
    )
    t.add("l_code", [b"200 ", b"200 ", b"200 ", b"201 ", b"204 ", b"302 ", b"404 ", b"500 "])
    t.add("l_lat", [f"{x}ms ".encode() for x in range(1, 2000)], zipf=0.9)
    t.add("l_user", [f"user={u} ".encode() for u in rng.integers(1000, 999999, 40000)], zipf=0.7)
    t.add("nl", [b"\n"])
    t.freeze()
    return t


_SCHEMAS: dict[str, list[str]] = {
    "csv": [
        "csv_id",
        "csv_date",
        "first_c",
        "last_c",
        "city_c",
        "product_c",
        "qty_c",
        "amount_c",
        "status_nl",
    ],
    "jsonl": ["j_open", "j_date", "time", "j_user", "j_event", "j_item", "j_value", "j_city"],
    "log": [
        "l_date",
        "time",
        "l_ms",
        "l_level",
        "l_svc",
        "l_req",
        "l_code",
        "l_lat",
        "l_user",
        "word",
        "word",
        "word",
        "nl",
    ],
}
# Approximate bytes per record, used only to size the batches.
_RECORD_BYTES = {"csv": 70, "jsonl": 130, "log": 100, "prose": 7}

KINDS = ("csv", "jsonl", "log", "prose")


class TextGenerator:
    def __init__(self) -> None:
        self.table = build_table()

    def _batch(self, rng: np.random.Generator, kind: str, nbytes: int) -> bytes:
        t = self.table
        n = max(1, nbytes // _RECORD_BYTES[kind] + 1)
        if kind == "prose":
            idx = t.draw(rng, "word", n)
            mask = rng.random(n) < 0.09
            idx[mask] = t.draw(rng, "punct", int(mask.sum()))
            return t.render(idx)
        cols = []
        for name in _SCHEMAS[kind]:
            if name == "time":
                # Timestamps increase through a batch, as in a real log or export.
                col = t.vocabs["time"].start + np.sort(rng.integers(0, t.vocabs["time"].size, n))
            else:
                col = t.draw(rng, name, n)
            cols.append(col)
        idx = np.stack(cols, axis=1).reshape(-1)
        return t.render(idx)

    def pool(self, kind: str, nbytes: int) -> list[bytes]:
        """Distinct lines of `kind` (without their newline), about `nbytes` in total."""
        rng = np.random.default_rng([VOCAB_SEED, KINDS.index(kind)])
        blob = b"".join(self._batch(rng, kind, 4 << 20) for _ in range(max(1, nbytes >> 22)))
        return blob.split(b"\n")[1:-1]


class TextSource:
    """Text files assembled from per-kind line pools in a seeded random order.

    Rendering tokens costs numpy several operations per byte; shuffling pre-rendered lines
    costs one list lookup per ~80-byte line, which is what makes full-size generation fast.
    A pool is large compared to zstd's window (a few MiB), so repeats within a window are
    rare and the compression ratio stays that of the record format; and a CDC chunk holds
    thousands of lines in random order, so chunks never repeat across files by accident.
    """

    def __init__(self, pool_bytes: int = 32 << 20) -> None:
        gen = TextGenerator()
        self.pools = {kind: gen.pool(kind, pool_bytes) for kind in KINDS}

    def generate(self, rng: np.random.Generator, kind: str, size: int, batch: int = 8 << 20) -> list[bytes]:
        """Exactly `size` bytes of `kind` text (ending in a newline), as pieces in order."""
        pool = self.pools[kind]
        avg = sum(len(line) for line in pool[:1000]) / 1000 + 1
        pieces: list[bytes] = []
        remaining = size
        while remaining > 0:
            want = min(batch, remaining)
            data = b""
            while len(data) < want:
                idx = rng.integers(0, len(pool), int((want - len(data)) / avg) + 16)
                data += b"\n".join([pool[i] for i in idx.tolist()]) + b"\n"
            piece = data[:want]
            if want == remaining:
                piece = piece[:-1] + b"\n"
            pieces.append(piece)
            remaining -= want
        return pieces
