"""Fixed-vector unit tests of backupctl/repo/: the byte-level format of docs/design.md."""
