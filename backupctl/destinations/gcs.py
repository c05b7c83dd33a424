"""Destination `gcs`: Google Cloud Storage via google-cloud-storage.

Uploads are atomic (an object appears only when its single request or the last chunk of
a resumable upload is committed). Conditional create is ``ifGenerationMatch=0``. The
SDK's own retries are off: the RetryingDestination wrapper owns retrying.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from backupctl.destinations._common import check_name, clean_prefix, is_metadata
from backupctl.destinations.base import (
    AlreadyExists,
    Capabilities,
    Destination,
    DestinationOptions,
    NotFound,
    ObjectInfo,
    PermissionDenied,
    StorageFull,
    Transient,
    require_module,
)
from backupctl.errors import BackupctlError, DestinationError
from backupctl.redact import url_credentials

_MIB = 1024 * 1024


class GCSOptions(DestinationOptions):
    type: Literal["gcs"] = "gcs"
    bucket: str = Field(description="Bucket name (it must exist).")
    prefix: str = Field("", description="Object name prefix inside the bucket, e.g. `backups/prod`.")
    credentials_file: Path | None = Field(
        None, description="Service-account JSON key; without it, application default credentials."
    )
    project: str | None = Field(None, description="Project for requests that need one.")
    endpoint: str | None = Field(
        None,
        description="Emulator or private endpoint, e.g. `http://127.0.0.1:4443` (or set "
        "STORAGE_EMULATOR_HOST); used anonymously unless credentials_file is set.",
    )
    storage_class: Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"] | None = Field(
        None, description="Class of pack files under `data/` (others: STANDARD); omitted = bucket default."
    )
    resumable_chunk_mib: int = Field(
        16,
        ge=1,
        le=1024,
        description="Objects larger than this use a resumable upload in chunks of this size.",
    )
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for each request.")


class GCSDestination(Destination):
    Options = GCSOptions
    capabilities = Capabilities(
        conditional_create=True,
        range_reads=True,
        archive_tiers=False,
        notes=(
            "NEARLINE/COLDLINE/ARCHIVE are readable at once, with retrieval fees and minimum storage time",
        ),
    )

    def __init__(self, name: str, options: DestinationOptions) -> None:
        super().__init__(name, options)
        assert isinstance(options, GCSOptions)
        self.opts = options
        self._prefix = clean_prefix(options.prefix)
        self._storage = require_module("google.cloud.storage", "gcs")
        self._api_exc = require_module("google.api_core.exceptions", "gcs")
        self._auth_exc = require_module("google.auth.exceptions", "gcs")
        self._requests_exc = require_module("requests.exceptions", "gcs")
        self._endpoint = options.endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
        self._credentials = self._load_credentials()
        # The client's HTTP session is not documented as thread-safe: one client per thread.
        self._local = threading.local()

    def _load_credentials(self) -> Any:
        try:
            if self.opts.credentials_file:
                sa = require_module("google.oauth2.service_account", "gcs")
                path = os.path.expanduser(str(self.opts.credentials_file))
                return sa.Credentials.from_service_account_file(
                    path, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
                )
            if self._endpoint:
                return require_module("google.auth.credentials", "gcs").AnonymousCredentials()
            return None  # application default credentials, resolved by the client
        except FileNotFoundError:
            raise DestinationError(
                f"destination {self.name!r}: credentials_file {self.opts.credentials_file} does not exist"
            ) from None
        except (ValueError, KeyError) as exc:
            raise DestinationError(
                f"destination {self.name!r}: credentials_file {self.opts.credentials_file} is not a "
                f"service-account JSON key ({type(exc).__name__})"
            ) from None

    def _bucket(self) -> Any:
        bucket = getattr(self._local, "bucket", None)
        if bucket is None:
            kwargs: dict[str, Any] = {
                "project": self.opts.project or "backupctl",
                "credentials": self._credentials,
            }
            if self._endpoint:
                kwargs["client_options"] = {"api_endpoint": self._endpoint}
            try:
                client = self._storage.Client(**kwargs)
            except Exception as exc:
                raise self._error(exc, "") from None
            bucket = client.bucket(self.opts.bucket)
            self._local.bucket = bucket
        return bucket

    @property
    def location(self) -> str:
        base = f"gs://{self.opts.bucket}/{self._prefix}"
        # Shown and recorded everywhere: a password inside the endpoint URL is masked.
        return f"{base} at {url_credentials(self.opts.endpoint)}" if self.opts.endpoint else base

    def _key(self, name: str) -> str:
        check_name(name)
        return self._prefix + name

    def _error(
        self, exc: Exception, name: str, *, exclusive: bool = False, bucket_op: bool = False
    ) -> BackupctlError:
        """Map an SDK exception; `bucket_op`: a 404 can only mean a missing bucket (put, list)."""
        where = f"destination {self.name!r} ({self.location})" + (f": {name}" if name else "")
        api = self._api_exc
        if isinstance(exc, api.NotFound):
            if bucket_op:
                return DestinationError(
                    f"{where}: bucket {self.opts.bucket!r} does not exist",
                    hint="create it, or check bucket and project",
                )
            return NotFound(f"{where}: no such object")
        if isinstance(exc, api.PreconditionFailed) and exclusive:
            return AlreadyExists(f"{where}: already exists")
        if isinstance(exc, api.Forbidden | api.Unauthorized):
            return PermissionDenied(
                f"{where}: access denied ({exc.code})",
                hint="check credentials_file (or application default credentials) and the bucket's IAM roles",
            )
        if isinstance(exc, api.TooManyRequests | api.ServerError):
            return Transient(f"{where}: HTTP {exc.code}, worth a retry")
        if isinstance(exc, api.GoogleAPICallError):
            if exc.code == 507:
                return StorageFull(f"{where}: storage quota exceeded")
            return DestinationError(f"{where}: HTTP {exc.code} {type(exc).__name__}")
        if isinstance(exc, self._auth_exc.RefreshError):
            return PermissionDenied(
                f"{where}: credentials were refused when fetching an access token",
                hint="check credentials_file: the service account key may be revoked or wrong",
            )
        if isinstance(exc, self._auth_exc.DefaultCredentialsError):
            return PermissionDenied(
                f"{where}: no Google credentials found",
                hint="set credentials_file, or run `gcloud auth application-default login`",
            )
        if isinstance(
            exc,
            self._auth_exc.TransportError
            | self._requests_exc.ConnectionError
            | self._requests_exc.Timeout
            | self._requests_exc.ChunkedEncodingError
            | ConnectionError
            | TimeoutError,
        ):
            return Transient(f"{where}: {type(exc).__name__}, check the network and endpoint")
        if isinstance(exc, BackupctlError):
            return exc
        return DestinationError(f"{where}: {type(exc).__name__}")

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(
            name, data, exclusive, None if is_metadata(name) and not self.opts.storage_class else "auto"
        )

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(name, data, exclusive, "STANDARD" if self.opts.storage_class else None)

    def _put(self, name: str, data: bytes, exclusive: bool, storage_class: str | None) -> None:
        key = self._key(name)
        if storage_class == "auto":
            storage_class = "STANDARD" if is_metadata(name) else self.opts.storage_class
        chunk = self.opts.resumable_chunk_mib * _MIB
        try:
            blob = self._bucket().blob(key, chunk_size=chunk if len(data) > chunk else None)
            if storage_class:
                blob.storage_class = storage_class
            blob.upload_from_string(
                data,
                content_type="application/octet-stream",
                if_generation_match=0 if exclusive else None,
                retry=None,
                timeout=self.opts.timeout,
            )
        except Exception as exc:
            raise self._error(exc, name, exclusive=exclusive, bucket_op=True) from None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if length == 0:
            self.stat(name)
            return b""
        end = None if length is None else offset + length - 1
        try:
            data: bytes = (
                self._bucket()
                .blob(key)
                .download_as_bytes(
                    start=offset or None,
                    end=end,
                    raw_download=True,
                    checksum=None,
                    retry=None,
                    timeout=self.opts.timeout,
                )
            )
            return data
        except self._api_exc.RequestRangeNotSatisfiable:
            self.stat(name)
            return b""  # offset at or past the end, like a short read of a file
        except Exception as exc:
            raise self._error(exc, name) from None

    def stat(self, name: str) -> ObjectInfo:
        try:
            blob = self._bucket().get_blob(self._key(name), retry=None, timeout=self.opts.timeout)
        except Exception as exc:
            raise self._error(exc, name) from None
        if blob is None:
            raise NotFound(f"destination {self.name!r} ({self.location}): {name}: no such object")
        return ObjectInfo(name, int(blob.size or 0))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._prefix)
        try:
            bucket = self._bucket()
            blobs = bucket.client.list_blobs(
                bucket, prefix=self._prefix + prefix, retry=None, timeout=self.opts.timeout
            )
            for blob in blobs:
                updated = blob.updated
                yield ObjectInfo(
                    blob.name[strip:],
                    int(blob.size or 0),
                    updated.timestamp() if updated is not None else None,
                )
        except Exception as exc:
            raise self._error(exc, prefix, bucket_op=True) from None

    def delete(self, name: str) -> None:
        try:
            self._bucket().blob(self._key(name)).delete(retry=None, timeout=self.opts.timeout)
        except Exception as exc:
            raise self._error(exc, name) from None
