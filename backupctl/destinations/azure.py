"""Destination `azure`: Azure Blob Storage via azure-storage-blob.

A blob appears only when its single Put Blob or its Put Block List commits, so uploads
are atomic. Conditional create is ``If-None-Match: *`` (``overwrite=False``). The SDK's
own retries are off: the RetryingDestination wrapper owns retrying.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator

from backupctl.destinations._common import Scrubber, check_name, clean_prefix, is_metadata, secret
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

_MIB = 1024 * 1024
_DENIED_CODES = {
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationServiceMismatch",
    "InsufficientAccountPermissions",
    "AccountIsDisabled",
}


class AzureOptions(DestinationOptions):
    type: Literal["azure"] = "azure"
    container: str = Field(description="Container name (it must exist).")
    prefix: str = Field("", description="Blob name prefix inside the container, e.g. `backups/prod`.")
    connection_string_env: str | None = Field(
        None, description="Environment variable holding a storage connection string."
    )
    connection_string_file: Path | None = Field(None, description="File holding a storage connection string.")
    account_url: str | None = Field(
        None, description="Blob service URL, e.g. `https://ACCOUNT.blob.core.windows.net`."
    )
    account_name: str | None = Field(
        None, description="Account name for account_key; default: taken from account_url."
    )
    account_key_env: str | None = Field(None, description="Environment variable holding the account key.")
    account_key_file: Path | None = Field(None, description="File holding the account key.")
    sas_token_env: str | None = Field(None, description="Environment variable holding a SAS token.")
    sas_token_file: Path | None = Field(None, description="File holding a SAS token.")
    access_tier: Literal["Hot", "Cool", "Cold", "Archive"] | None = Field(
        None,
        description="Tier of pack files under `data/`; other blobs are always Hot. Omitted = account default.",
    )
    max_single_put_mib: int = Field(
        64, ge=1, le=5000, description="Blobs larger than this are uploaded as blocks and a block list."
    )
    block_size_mib: int = Field(8, ge=1, le=4000, description="Block size of a block upload.")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for each request.")

    @model_validator(mode="after")
    def _check(self) -> AzureOptions:
        has_conn = bool(self.connection_string_env or self.connection_string_file)
        if has_conn == bool(self.account_url):
            raise ValueError("set either connection_string_env/_file or account_url")
        if has_conn and (
            self.account_key_env or self.account_key_file or self.sas_token_env or self.sas_token_file
        ):
            raise ValueError(
                "a connection string already holds the credentials: drop account_key_*/sas_token_*"
            )
        has_key = bool(self.account_key_env or self.account_key_file)
        has_sas = bool(self.sas_token_env or self.sas_token_file)
        if has_key and has_sas:
            raise ValueError("set account_key_env/_file or sas_token_env/_file, not both")
        if self.account_url and not (has_key or has_sas):
            raise ValueError("account_url needs account_key_env/_file or sas_token_env/_file")
        return self


class AzureDestination(Destination):
    Options = AzureOptions
    capabilities = Capabilities(
        conditional_create=True,
        range_reads=True,
        archive_tiers=True,
        notes=("Archive-tier packs must be rehydrated to Hot or Cool before they can be read",),
    )

    def __init__(self, name: str, options: DestinationOptions) -> None:
        super().__init__(name, options)
        assert isinstance(options, AzureOptions)
        self.opts = options
        self._prefix = clean_prefix(options.prefix)
        self._scrub = Scrubber()
        blob = require_module("azure.storage.blob", "azure")
        self._exc = require_module("azure.core.exceptions", "azure")
        self._tier = blob.StandardBlobTier
        client_kwargs: dict[str, Any] = {
            "retry_total": 0,
            "max_single_put_size": options.max_single_put_mib * _MIB,
            "max_block_size": options.block_size_mib * _MIB,
            "connection_timeout": min(options.timeout, 20.0),
            "read_timeout": options.timeout,
        }
        conn = self._scrub.add(
            secret(options.connection_string_env, options.connection_string_file, "azure connection string")
        )
        try:
            if conn:
                service = blob.BlobServiceClient.from_connection_string(conn, **client_kwargs)
            else:
                assert options.account_url
                key = self._scrub.add(
                    secret(options.account_key_env, options.account_key_file, "azure account key")
                )
                sas = self._scrub.add(
                    secret(options.sas_token_env, options.sas_token_file, "azure SAS token")
                )
                credential: Any = {"account_name": self._account_name(), "account_key": key} if key else sas
                service = blob.BlobServiceClient(options.account_url, credential=credential, **client_kwargs)
        except Exception as exc:
            # A malformed connection string or key: never show it, it holds the secret.
            raise DestinationError(
                f"destination {self.name!r}: cannot use the configured Azure credentials ({type(exc).__name__})",
                hint="check the connection string / account key / SAS token reference",
            ) from None
        # Azure SDK clients are thread-safe.
        self._container = service.get_container_client(options.container)
        self._account = service.account_name or "?"

    def _account_name(self) -> str:
        if self.opts.account_name:
            return self.opts.account_name
        url = urlparse(self.opts.account_url or "")
        host = url.hostname or ""
        if host.endswith(".blob.core.windows.net") or not url.path.strip("/"):
            return host.split(".")[0]
        return url.path.strip("/").split("/")[0]  # emulator style: http://127.0.0.1:10000/ACCOUNT

    @property
    def location(self) -> str:
        return f"azure://{self._account}/{self.opts.container}/{self._prefix}"

    def _key(self, name: str) -> str:
        check_name(name)
        return self._prefix + name

    def _error(self, exc: Exception, name: str, *, exclusive: bool = False) -> BackupctlError:
        where = f"destination {self.name!r} ({self.location})" + (f": {name}" if name else "")
        az = self._exc
        raw_code = getattr(exc, "error_code", None) or ""
        code = str(getattr(raw_code, "value", raw_code))
        status = int(
            getattr(getattr(exc, "response", None), "status_code", 0) or getattr(exc, "status_code", 0) or 0
        )
        if code == "ContainerNotFound":
            return DestinationError(
                f"{where}: container {self.opts.container!r} does not exist",
                hint="create it, or check the name",
            )
        if isinstance(exc, az.ResourceNotFoundError) or code == "BlobNotFound":
            return NotFound(f"{where}: no such object")
        if isinstance(exc, az.ResourceExistsError) and exclusive and code in ("BlobAlreadyExists", ""):
            return AlreadyExists(f"{where}: already exists")
        if code == "BlobArchived":
            return DestinationError(
                f"{where}: blob is in the Archive tier and must be rehydrated first",
                hint="az storage blob set-tier --tier Hot --rehydrate-priority Standard ..., then retry "
                "once rehydration has finished (up to 15 hours)",
            )
        if isinstance(exc, az.ClientAuthenticationError) or code in _DENIED_CODES or status == 403:
            return PermissionDenied(
                f"{where}: access denied ({code or status})",
                hint="check the account key, SAS token (expiry, permissions) or connection string",
            )
        if isinstance(exc, az.ResourceExistsError) and exclusive:
            return AlreadyExists(f"{where}: already exists")
        if code in ("InsufficientAccountStorage", "AccountQuotaExceeded"):
            return StorageFull(f"{where}: storage quota exceeded")
        if (
            status >= 500
            or status in (408, 429)
            or code in ("ServerBusy", "OperationTimedOut", "InternalError")
        ):
            return Transient(f"{where}: {code or status}, worth a retry")
        if isinstance(exc, az.ServiceRequestError | az.ServiceResponseError | ConnectionError | TimeoutError):
            return Transient(f"{where}: {type(exc).__name__}, check the network and account_url")
        if isinstance(exc, BackupctlError):
            return exc
        if isinstance(exc, az.HttpResponseError):
            return DestinationError(f"{where}: {code or status}")
        return DestinationError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}")

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(name, data, exclusive, "Hot" if is_metadata(name) else self.opts.access_tier)

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(name, data, exclusive, "Hot")

    def _put(self, name: str, data: bytes, exclusive: bool, tier: str | None) -> None:
        # Metadata tier is set only if the user chose a tier for packs: an account whose
        # default is Hot needs nothing, and some emulators reject tiers.
        tier = tier if self.opts.access_tier else None
        try:
            self._container.upload_blob(
                name=self._key(name),
                data=data,
                length=len(data),
                overwrite=not exclusive,
                standard_blob_tier=self._tier(tier) if tier else None,
                max_concurrency=1,
                timeout=int(self.opts.timeout),
            )
        except Exception as exc:
            raise self._error(exc, name, exclusive=exclusive) from None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if length == 0:
            self.stat(name)
            return b""
        try:
            stream = self._container.download_blob(
                key,
                offset=offset if (offset or length is not None) else None,
                length=length,
                max_concurrency=1,
            )
            data: bytes = stream.readall()
            return data
        except self._exc.HttpResponseError as exc:
            if getattr(exc, "status_code", 0) == 416:
                self.stat(name)
                return b""  # offset at or past the end, like a short read of a file
            raise self._error(exc, name) from None
        except Exception as exc:
            raise self._error(exc, name) from None

    def stat(self, name: str) -> ObjectInfo:
        try:
            props = self._container.get_blob_client(self._key(name)).get_blob_properties()
        except Exception as exc:
            raise self._error(exc, name) from None
        return ObjectInfo(name, int(props.size))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        strip = len(self._prefix)
        try:
            for props in self._container.list_blobs(name_starts_with=self._prefix + prefix):
                modified = props.last_modified
                yield ObjectInfo(
                    props.name[strip:],
                    int(props.size),
                    modified.timestamp() if modified is not None else None,
                )
        except Exception as exc:
            raise self._error(exc, prefix) from None

    def delete(self, name: str) -> None:
        try:
            self._container.delete_blob(self._key(name))
        except Exception as exc:
            raise self._error(exc, name) from None

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass
