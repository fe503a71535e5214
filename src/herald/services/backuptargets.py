"""Where scheduled backups go: a directory or an S3-compatible bucket; and retention.

A target only ever lists, stores and deletes files named like Herald's own
backups (``domain.retention.BACKUP_NAME``): anything else beside them is
invisible to it, so retention cannot delete what Herald did not write.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from herald.domain.retention import backup_time, backups_to_keep
from herald.errors import ConfigError, HeraldError


class Target(Protocol):
    """A place that keeps backup archives."""

    def describe(self) -> str: ...

    def backups(self) -> list[tuple[str, datetime]]:
        """Herald's backups there: (file name, creation time from the name)."""
        ...

    def store(self, path: Path) -> str:
        """Keep the archive at ``path`` (already complete); returns where it went."""
        ...

    def delete(self, name: str) -> None: ...


@dataclass(frozen=True)
class DirectoryTarget:
    """Archives in a local (or mounted) directory; ``create_backup`` writes there directly."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    def backups(self) -> list[tuple[str, datetime]]:
        if not self.path.is_dir():
            return []
        found = []
        for entry in self.path.iterdir():
            created = backup_time(entry.name)
            if created is not None and entry.is_file():
                found.append((entry.name, created))
        return found

    def store(self, path: Path) -> str:
        if path.parent != self.path:
            raise HeraldError(f"{path} is not in the backup directory {self.path}")
        return str(path)

    def delete(self, name: str) -> None:
        if backup_time(name) is None:  # never anything but our own archives
            raise HeraldError(f"refusing to delete {name}: not a Herald backup's name")
        (self.path / name).unlink(missing_ok=True)


class S3Target:
    """Archives as objects under ``s3://bucket/prefix/`` of an S3-compatible service.

    Credentials: the given key pair, else boto3's usual chain (``AWS_*``
    environment, shared files, instance roles). An upload appears only once
    complete (S3 semantics), so a failed one leaves nothing.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"HERALD_BACKUP_S3_URL {url!r} must look like s3://bucket/prefix")
        self.url = url.rstrip("/")
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        import boto3  # only where S3 is configured: it takes a while to import
        from botocore.config import Config

        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(
                connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
            ),
        )

    def describe(self) -> str:
        return self.url

    def backups(self) -> list[tuple[str, datetime]]:
        found = []
        with _s3_errors(f"cannot list {self.url}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = str(item["Key"])[len(self.prefix) :]
                    created = backup_time(name)
                    if created is not None:
                        found.append((name, created))
        return found

    def store(self, path: Path) -> str:
        key = self.prefix + path.name
        with _s3_errors(f"cannot upload {path.name} to {self.url}"):
            self.client.upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"

    def delete(self, name: str) -> None:
        if backup_time(name) is None:
            raise HeraldError(f"refusing to delete {name}: not a Herald backup's name")
        with _s3_errors(f"cannot delete {name} from {self.url}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)


@contextmanager
def _s3_errors(doing: str) -> Iterator[None]:
    """Turn boto3's errors into a HeraldError with a one-line reason."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HeraldError(f"{doing}: {reason}") from exc


def apply_retention(target: Target, *, daily: int, weekly: int) -> list[str]:
    """Delete the target's backups that ``domain.retention`` does not keep; returns them.

    Side effect: deletes files or objects (only Herald's own archives).
    """
    found = target.backups()
    keep = backups_to_keep(found, daily=daily, weekly=weekly)
    dropped = sorted(name for name, _ in found if name not in keep)
    for name in dropped:
        target.delete(name)
    return dropped
