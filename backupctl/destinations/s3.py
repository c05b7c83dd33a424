"""Destination `s3`: Amazon S3 and S3-compatible hosts (MinIO, Ceph, Wasabi...) via boto3.

Single PUTs and completed multipart uploads are atomic on S3. Conditional create uses
``If-None-Match: *`` (on PutObject and on CompleteMultipartUpload), which AWS and most
compatible hosts enforce; hosts that ignore it make ``exclusive=True`` a plain overwrite.
Retries are left to the RetryingDestination wrapper: the SDK's own retries are off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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
    Transient,
    require_module,
)
from backupctl.errors import BackupctlError, DestinationError
from backupctl.redact import url_credentials

StorageClass = Literal[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
]
# Classes whose objects need a RestoreObject request before they can be read.
ARCHIVE_CLASSES = {"GLACIER", "DEEP_ARCHIVE"}

_MIB = 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "KMS.AccessDeniedException",
}
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
}


class S3Options(DestinationOptions):
    type: Literal["s3"] = "s3"
    bucket: str = Field(description="Bucket name (it must exist).")
    prefix: str = Field("", description="Key prefix inside the bucket, e.g. `backups/prod`.")
    region: str | None = Field(None, description="AWS region; default from the AWS config chain.")
    endpoint: str | None = Field(
        None, description="URL of an S3-compatible host, e.g. `https://minio.example.com:9000`."
    )
    force_path_style: bool = Field(
        False, description="Path-style URLs (`host/bucket/key`), needed by most S3-compatible hosts."
    )
    storage_class: StorageClass = Field(
        "STANDARD", description="Class of pack files under `data/`; every other object is STANDARD."
    )
    sse: Literal["none", "AES256", "aws:kms"] = Field("none", description="Server-side encryption.")
    kms_key_id: str | None = Field(None, description="KMS key ID or ARN for `sse: aws:kms`.")
    profile: str | None = Field(None, description="Profile in ~/.aws/config and ~/.aws/credentials.")
    access_key_id_env: str | None = Field(None, description="Environment variable holding the access key ID.")
    access_key_id_file: Path | None = Field(None, description="File holding the access key ID.")
    secret_access_key_env: str | None = Field(
        None, description="Environment variable holding the secret access key."
    )
    secret_access_key_file: Path | None = Field(None, description="File holding the secret access key.")
    session_token_env: str | None = Field(None, description="Environment variable holding a session token.")
    session_token_file: Path | None = Field(None, description="File holding a session token.")
    multipart_threshold_mib: int = Field(
        64, ge=5, description="Objects at least this large are uploaded in parts (multipart upload)."
    )
    part_size_mib: int = Field(16, ge=5, le=5120, description="Part size of a multipart upload.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a connection.")
    read_timeout: float = Field(60.0, gt=0, description="Seconds to wait for a response.")

    @model_validator(mode="after")
    def _check(self) -> S3Options:
        if self.kms_key_id and self.sse != "aws:kms":
            raise ValueError("kms_key_id needs sse: aws:kms")
        has_id = bool(self.access_key_id_env or self.access_key_id_file)
        has_secret = bool(self.secret_access_key_env or self.secret_access_key_file)
        if has_id != has_secret:
            raise ValueError("set both access_key_id_env/_file and secret_access_key_env/_file, or neither")
        if self.multipart_threshold_mib < self.part_size_mib:
            raise ValueError("multipart_threshold_mib must be at least part_size_mib")
        return self


class S3Destination(Destination):
    Options = S3Options
    capabilities = Capabilities(
        conditional_create=True,
        range_reads=True,
        archive_tiers=True,
        notes=(
            "conditional create uses If-None-Match: *; S3-compatible hosts that ignore it overwrite",
            "GLACIER and DEEP_ARCHIVE packs need a restore request before they can be read",
        ),
    )

    def __init__(self, name: str, options: DestinationOptions) -> None:
        super().__init__(name, options)
        assert isinstance(options, S3Options)
        self.opts = options
        self._prefix = clean_prefix(options.prefix)
        self._scrub = Scrubber()
        boto3 = require_module("boto3", "s3")
        botocore_config = require_module("botocore.config", "s3")
        self._botocore_exc = require_module("botocore.exceptions", "s3")
        key_id = self._scrub.add(
            secret(options.access_key_id_env, options.access_key_id_file, "s3 access key id")
        )
        key = self._scrub.add(
            secret(options.secret_access_key_env, options.secret_access_key_file, "s3 secret access key")
        )
        token = self._scrub.add(
            secret(options.session_token_env, options.session_token_file, "s3 session token")
        )
        session = boto3.session.Session(
            aws_access_key_id=key_id,
            aws_secret_access_key=key,
            aws_session_token=token,
            region_name=options.region,
            profile_name=options.profile,
        )
        config = botocore_config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            max_pool_connections=max(10, options.connections * 2),
            s3={"addressing_style": "path" if options.force_path_style else "auto"},
        )
        try:
            # botocore clients are thread-safe; the session is only used here.
            self._client = session.client("s3", endpoint_url=options.endpoint, config=config)
        except Exception as exc:
            raise self._error(exc, "") from None

    @property
    def location(self) -> str:
        base = f"s3://{self.opts.bucket}/{self._prefix}"
        # Shown and recorded everywhere: a password inside the endpoint URL is masked.
        return f"{base} at {url_credentials(self.opts.endpoint)}" if self.opts.endpoint else base

    def _key(self, name: str) -> str:
        check_name(name)
        return self._prefix + name

    # --- errors ---------------------------------------------------------------------------

    def _error(self, exc: Exception, name: str, *, exclusive: bool = False) -> BackupctlError:
        where = f"destination {self.name!r} ({self.location})" + (f": {name}" if name else "")
        bexc = self._botocore_exc
        if isinstance(exc, bexc.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _NOT_FOUND:
                return NotFound(f"{where}: no such object")
            if code == "NoSuchBucket":
                return DestinationError(
                    f"{where}: bucket {self.opts.bucket!r} does not exist",
                    hint="create it, or check bucket, region and endpoint",
                )
            if code in ("PreconditionFailed", "412") and exclusive:
                return AlreadyExists(f"{where}: already exists")
            if code in _DENIED or status == 403:
                return PermissionDenied(
                    f"{where}: access denied ({code or status})",
                    hint="check the access key, secret and the bucket policy",
                )
            if code == "InvalidObjectState":
                return DestinationError(
                    f"{where}: object is in an archive storage class and must be restored first",
                    hint="aws s3api restore-object --bucket BUCKET --key KEY --restore-request Days=7, "
                    "then retry once the restore has finished (hours for GLACIER/DEEP_ARCHIVE)",
                )
            if code in _TRANSIENT or status >= 500 or status in (408, 429):
                return Transient(f"{where}: {code or status}, worth a retry")
            message = self._scrub(str(err.get("Message") or ""))
            return DestinationError(f"{where}: {code or status}{': ' + message if message else ''}")
        if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
            return PermissionDenied(
                f"{where}: no AWS credentials found",
                hint="set access_key_id_env/secret_access_key_env, or configure the AWS credential chain",
            )
        if isinstance(exc, bexc.ProfileNotFound):
            return DestinationError(f"{where}: AWS profile {self.opts.profile!r} not found")
        if isinstance(
            exc,
            bexc.EndpointConnectionError
            | bexc.ConnectionClosedError
            | bexc.ReadTimeoutError
            | bexc.ConnectTimeoutError
            | bexc.IncompleteReadError
            | bexc.ResponseStreamingError
            | ConnectionError
            | TimeoutError,
        ):
            return Transient(f"{where}: {type(exc).__name__}, check the network and endpoint")
        if isinstance(exc, BackupctlError):
            return exc
        return DestinationError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}")

    # --- operations -----------------------------------------------------------------------

    def _extra_args(self, storage_class: str) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if storage_class != "STANDARD":
            args["StorageClass"] = storage_class
        if self.opts.sse != "none":
            args["ServerSideEncryption"] = self.opts.sse
            if self.opts.kms_key_id:
                args["SSEKMSKeyId"] = self.opts.kms_key_id
        return args

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        storage_class = "STANDARD" if is_metadata(name) else self.opts.storage_class
        self._put(name, data, exclusive, storage_class)

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(name, data, exclusive, "STANDARD")

    def _put(self, name: str, data: bytes, exclusive: bool, storage_class: str) -> None:
        key = self._key(name)
        extra = self._extra_args(storage_class)
        if exclusive:
            extra["IfNoneMatch"] = "*"
        try:
            if len(data) >= self.opts.multipart_threshold_mib * _MIB:
                self._put_multipart(key, data, extra)
            else:
                self._client.put_object(Bucket=self.opts.bucket, Key=key, Body=data, **extra)
        except Exception as exc:
            raise self._error(exc, name, exclusive=exclusive) from None

    def _put_multipart(self, key: str, data: bytes, extra: dict[str, Any]) -> None:
        # The object appears only when CompleteMultipartUpload succeeds, so a failed upload
        # is never visible; it is aborted so that its parts stop costing money.
        if_none_match = extra.pop("IfNoneMatch", None)
        bucket = self.opts.bucket
        upload_id = self._client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
        try:
            size = self.opts.part_size_mib * _MIB
            view = memoryview(data)
            parts = []
            for number, start in enumerate(range(0, len(data), size), start=1):
                resp = self._client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[start : start + size]),
                )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
            complete: dict[str, Any] = {"IfNoneMatch": if_none_match} if if_none_match else {}
            self._client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **complete
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:
                pass
            raise

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if length == 0:
            self.stat(name)
            return b""
        args: dict[str, Any] = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self._client.get_object(Bucket=self.opts.bucket, Key=key, **args)
            body: bytes = resp["Body"].read()
            return body
        except self._botocore_exc.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # offset at or past the end, like a short read of a file
            raise self._error(exc, name) from None
        except Exception as exc:
            raise self._error(exc, name) from None

    def stat(self, name: str) -> ObjectInfo:
        try:
            resp = self._client.head_object(Bucket=self.opts.bucket, Key=self._key(name))
        except Exception as exc:
            raise self._error(exc, name) from None
        return ObjectInfo(name, int(resp["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        strip = len(self._prefix)
        try:
            for page in paginator.paginate(Bucket=self.opts.bucket, Prefix=self._prefix + prefix):
                for item in page.get("Contents", ()):
                    modified = item.get("LastModified")
                    mtime = modified.timestamp() if modified is not None else None
                    yield ObjectInfo(item["Key"][strip:], int(item["Size"]), mtime)
        except Exception as exc:
            raise self._error(exc, prefix) from None

    def delete(self, name: str) -> None:
        # DeleteObject succeeds for a missing key; the contract wants NotFound.
        self.stat(name)
        try:
            self._client.delete_object(Bucket=self.opts.bucket, Key=self._key(name))
        except Exception as exc:
            raise self._error(exc, name) from None

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass
