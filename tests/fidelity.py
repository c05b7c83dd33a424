"""The fidelity corpus: a seeded tree with every kind of entry and metadata Linux offers,
and a comparison that says exactly what differs between two trees.

`build_corpus(root, seed)` makes the tree; `snapshot(root)` records what a restore must
reproduce; `differences(expected, actual)` lists every difference except what
docs/guide.md lists as not captured (NOT_CAPTURED below keeps the two in step).

Everything that needs root (device nodes, foreign owners, trusted.* xattrs,
capabilities, mode 000 entries a non-root backup could not read) is made only as root;
the tests that use the corpus run as root in CI.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

IS_ROOT = os.geteuid() == 0

# What the files source does not capture (docs/guide.md, "What is and is not captured
# for files"); `snapshot` never records these, so a difference in them is never reported.
NOT_CAPTURED = (
    "sockets",
    "atime",
    "ctime",
    "birth time",
    "inode numbers",
    "directory sizes",
    "allocated blocks of files that are not sparse",
    "security.selinux",
    "chattr",
)

# Timestamps outside 1970..2038 with nanoseconds (ext4 with 256-byte inodes: 1901..2446).
MTIME_BEFORE_1970 = -1_000_000_000_123_456_789  # 1938
MTIME_AFTER_2100 = 4_200_000_000_987_654_321  # 2103


def _write(path: bytes, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _sparse(path: bytes, size: int, data_at: list[int], rnd: random.Random) -> None:
    """A file of `size` bytes with 4 KiB of data at each offset in `data_at`, holes elsewhere."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in data_at:
            os.pwrite(fd, rnd.randbytes(4096), off)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def xattrs_supported(directory: Path) -> bool:
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def build_corpus(root: Path, *, seed: int = 12, big_dir: int = 20_000, depth: int = 100) -> Path:
    """Build the corpus under `root` (created); returns root."""
    rnd = random.Random(seed)
    root.mkdir(parents=True)
    r = os.fsencode(root)

    def p(*parts: str | bytes) -> bytes:
        return os.path.join(r, *(os.fsencode(x) for x in parts))

    # Regular files: empty, small, a multi-chunk one, random sizes.
    os.mkdir(p("files"))
    _write(p("files", "empty"), b"")
    _write(p("files", "one-byte"), b"x")
    _write(p("files", "large.bin"), rnd.randbytes(5 << 20))
    _write(p("files", "zeros.bin"), bytes(3 << 20))  # all zeros, but dense (allocated)
    for i in range(40):
        _write(p("files", f"r{i:02d}.dat"), rnd.randbytes(rnd.choice([1, 100, 4096, 70_000, 600_000])))

    # Sparse files: data in a few places, holes at the start, middle and end; one all hole.
    os.mkdir(p("sparse"))
    _sparse(p("sparse", "mostly-hole"), 256 << 20, [0, 100 << 20, (200 << 20) + 4096], rnd)
    _sparse(p("sparse", "hole-first"), 64 << 20, [40 << 20], rnd)
    _sparse(p("sparse", "all-hole"), 32 << 20, [], rnd)

    # Names: 1..255 bytes, invalid UTF-8, newline, NFC and NFD side by side, glob characters.
    os.mkdir(p("names"))
    for length in (1, 2, 100, 200, 236, 237, 254, 255):
        _write(p("names", b"n" * (length - 1) + b"Z"), f"{length}\n".encode())
    odd = [
        b"\xff\xfe invalid utf-8",
        b"latin1-\xe9t\xe9",
        b"new\nline",
        b"tab\tand\rcarriage",
        "caf\u00e9".encode(),  # NFC
        "cafe\u0301".encode(),  # NFD, a different name
        b"-leading-dash",
        b" leading space",
        b"trailing space ",
        b"*?[glob]",
        b"back\\slash",
        b".hidden",
        b"..dots",
        "\u2603 snowman \U0001f600".encode(),
        b"\x01\x02control",
    ]
    for name in odd:
        _write(p("names", name), name)
    os.mkdir(p("names", b"dir \xff\n name"))
    _write(p("names", b"dir \xff\n name", b"inner"), b"inner")

    # Symlinks: relative, absolute, dangling, looping, to a directory, long targets.
    os.mkdir(p("links"))
    os.symlink(b"../files/one-byte", p("links", "relative"))
    os.symlink(b"/etc/hostname", p("links", "absolute"))
    os.symlink(b"does/not/exist", p("links", "dangling"))
    os.symlink(b"loop-b", p("links", "loop-a"))
    os.symlink(b"loop-a", p("links", "loop-b"))
    os.symlink(b"self", p("links", "self"))
    os.symlink(b"../files", p("links", "to-dir"))
    os.symlink(b"x/" * 2000 + b"end", p("links", "long-target"))  # 4003 bytes
    os.symlink(b"\xff\n odd target", p("links", "odd-target"))

    # Hard links: a group of three across directories, an empty file, a FIFO.
    os.mkdir(p("hard"))
    _write(p("hard", "a"), rnd.randbytes(10_000))
    os.link(p("hard", "a"), p("hard", "b"))
    os.link(p("hard", "a"), p("links", "hard-c"))
    _write(p("hard", "empty"), b"")
    os.link(p("hard", "empty"), p("hard", "empty-2"))

    # Special files: FIFOs (a hard-linked one too), sockets, device nodes (root).
    os.mkdir(p("special"))
    os.mkfifo(p("special", "fifo"), 0o640)
    os.mkfifo(p("special", "fifo-linked"))
    os.link(p("special", "fifo-linked"), p("special", "fifo-linked-2"))
    cwd = os.getcwd()
    os.chdir(p("special"))  # AF_UNIX paths are limited to 108 bytes: bind a relative name
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("socket")
        sock.close()
    finally:
        os.chdir(cwd)
    if IS_ROOT:
        os.mknod(p("special", "char-1-3"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(p("special", "block-7-200"), 0o660 | stat.S_IFBLK, os.makedev(7, 200))
        os.mknod(p("special", "char-big"), 0o600 | stat.S_IFCHR, os.makedev(4000, 70000))

    # Modes: setuid, setgid, sticky, 000, odd combinations.
    os.mkdir(p("modes"))
    modes = {"setuid": 0o4755, "setgid": 0o2755, "sticky-file": 0o1644, "all": 0o7777, "exec": 0o711}
    if IS_ROOT:
        modes["none"] = 0o000
    for mode_name, mode in modes.items():
        _write(p("modes", mode_name), mode_name.encode())
        os.chmod(p("modes", mode_name), mode)
    for mode_name, mode in {"sticky-dir": 0o1777, "setgid-dir": 0o2775, "private": 0o700}.items():
        os.mkdir(p("modes", mode_name))
        _write(p("modes", mode_name, "inside"), b"inside")
        os.chmod(p("modes", mode_name), mode)
    if IS_ROOT:
        os.mkdir(p("modes", "closed-dir"))
        _write(p("modes", "closed-dir", "inside"), b"behind 000")
        os.chmod(p("modes", "closed-dir"), 0)

    # Owners without passwd/group entries (root only).
    if IS_ROOT:
        os.mkdir(p("owners"))
        _write(p("owners", "nobody-known"), b"uid 54321")
        os.chown(p("owners", "nobody-known"), 54321, 54322)
        os.chmod(p("owners", "nobody-known"), 0o6750)  # chown cleared them; set again
        os.symlink(b"nobody-known", p("owners", "link"))
        os.lchown(p("owners", "link"), 54323, 54324)
        os.mkdir(p("owners", "dir"))
        os.chown(p("owners", "dir"), 60000, 60001)

    # Extended attributes, ACLs, capabilities.
    if xattrs_supported(root):
        os.mkdir(p("xattrs"))
        f = p("xattrs", "file")
        _write(f, b"with xattrs")
        os.setxattr(f, "user.plain", b"value")
        os.setxattr(f, "user.empty", b"")
        os.setxattr(f, "user.binary", bytes(range(256)))
        os.setxattr(f, "user.big", rnd.randbytes(3000))
        os.mkdir(p("xattrs", "dir"))
        os.setxattr(p("xattrs", "dir"), "user.on-dir", b"d")
        subprocess.run(["setfacl", "-m", "u:54321:rwx,g:54322:r", f], check=True)
        subprocess.run(["setfacl", "-d", "-m", "u:54321:rx", p("xattrs", "dir")], check=True)
        subprocess.run(["setfacl", "-m", "u:54321:rx", p("xattrs", "dir")], check=True)
        if IS_ROOT:
            os.setxattr(f, "trusted.backupctl", b"trusted value")
            _write(p("xattrs", "helper"), b"#!/bin/sh\nexit 0\n")
            os.chmod(p("xattrs", "helper"), 0o755)
            subprocess.run(
                ["setcap", "cap_net_raw,cap_net_bind_service+ep", p("xattrs", "helper")], check=True
            )
            os.symlink(b"file", p("xattrs", "link"))
            os.setxattr(p("xattrs", "link"), "trusted.on-link", b"l", follow_symlinks=False)

    # Wide and deep directories.
    os.mkdir(p("wide"))
    for i in range(big_dir):
        _write(p("wide", f"e{i:05d}"), b"" if i % 100 else str(i).encode())
    d = p("deep")
    os.mkdir(d)
    for i in range(depth):
        d = os.path.join(d, b"level-%03d" % i)
        os.mkdir(d)
    _write(os.path.join(d, b"bottom"), b"100 levels down")

    # Times: distinct, some before 1970 and after 2100, with nanoseconds; deepest first.
    special_times = {
        p("files", "one-byte"): MTIME_BEFORE_1970,
        p("files", "empty"): MTIME_AFTER_2100,
        p("links", "relative"): MTIME_BEFORE_1970 + 7,
        p("names"): MTIME_AFTER_2100 + 11,
        p("special", "fifo"): MTIME_BEFORE_1970 + 13,
    }
    everything: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(r):
        everything.extend(os.path.join(dirpath, n) for n in (*dirnames, *filenames))
    t = 1_500_000_000_000_000_001
    for i, path in enumerate(sorted(everything, key=lambda x: -x.count(b"/"))):
        ns = special_times.get(path, t + i * 1_000_003_007)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    os.utime(r, ns=(t, t))
    return root


# ---- comparison ------------------------------------------------------------------------


def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if name == "security.selinux":
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _digest(path: bytes) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def snapshot(root: Path) -> dict[bytes, dict[str, Any]]:
    """What a restore must reproduce, keyed by path (bytes) relative to root ("." is root).

    Hard links: every path of an inode with more than one link carries the sorted group
    of its paths. Sparse files (allocated < size) carry their allocated bytes.
    """
    r = os.fsencode(root)
    out: dict[bytes, dict[str, Any]] = {}
    groups: dict[int, list[bytes]] = {}

    def record(full: bytes, rel: bytes) -> None:
        st = os.lstat(full)
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISSOCK(st.st_mode):
            return  # not captured (documented)
        rec: dict[str, Any] = {
            "type": kind,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
            "xattrs": _xattrs(full),
        }
        if stat.S_ISREG(st.st_mode):
            rec["size"] = st.st_size
            rec["sha256"] = _digest(full)
            if st.st_blocks * 512 < st.st_size:
                rec["sparse_allocated"] = st.st_blocks * 512
        elif stat.S_ISLNK(st.st_mode):
            rec["target"] = os.readlink(full)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, []).append(rel)
        out[rel] = rec

    record(r, b".")
    for dirpath, dirnames, filenames in os.walk(r):
        for name in (*dirnames, *filenames):
            full = os.path.join(dirpath, name)
            record(full, os.path.relpath(full, r))
    for paths in groups.values():
        for rel in paths:
            if rel in out:
                out[rel]["links"] = tuple(sorted(paths))
    return out


# Allocation may differ by filesystem metadata and block rounding: a restored sparse file
# may take at most this much more than the original.
SPARSE_SLACK = 64 << 10


def difference_items(
    expected: dict[bytes, dict[str, Any]], actual: dict[bytes, dict[str, Any]]
) -> list[tuple[bytes, str, str]]:
    """Every difference as (path, what, description); `what` is a snapshot key, "missing"
    or "unexpected"."""
    out: list[tuple[bytes, str, str]] = []
    for rel in sorted(set(expected) - set(actual)):
        out.append((rel, "missing", f"missing: {rel!r}"))
    for rel in sorted(set(actual) - set(expected)):
        out.append((rel, "unexpected", f"unexpected: {rel!r}"))
    for rel in sorted(set(expected) & set(actual)):
        want, got = expected[rel], actual[rel]
        for key in sorted(set(want) | set(got)):
            if key == "sparse_allocated":
                if key in want and got.get(key, got.get("size", 0)) > want[key] + SPARSE_SLACK:
                    allocated = got.get(key, "all")
                    out.append(
                        (rel, key, f"{rel!r}: allocated {allocated} bytes, was {want[key]} (holes lost)")
                    )
                continue
            if want.get(key) != got.get(key):
                w, g = want.get(key), got.get(key)
                if key == "mode" and w is not None and g is not None:
                    w, g = oct(w), oct(g)
                out.append((rel, key, f"{rel!r}: {key} {g!r}, expected {w!r}"))
    return out


def differences(expected: dict[bytes, dict[str, Any]], actual: dict[bytes, dict[str, Any]]) -> list[str]:
    """Every difference between two snapshots, one line each (empty when identical)."""
    return [text for _rel, _what, text in difference_items(expected, actual)]


def assert_same(expected: dict[bytes, dict[str, Any]], actual: dict[bytes, dict[str, Any]]) -> None:
    diffs = differences(expected, actual)
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:40])
