"""backupctl: backups of databases and file trees into encrypted, deduplicated repositories."""

__version__ = "0.1.0"
