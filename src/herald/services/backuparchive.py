"""The backup archive on disk: table files, the tar around them, and checking one.

The layout and the row encoding are ``domain.backupformat``; this module
does the file I/O (gzip, tar, SHA-256) and never touches a database.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from herald.domain.backupformat import (
    MANIFEST_NAME,
    Manifest,
    RowCodec,
    TableEntry,
    manifest_to_json,
    parse_manifest,
)
from herald.errors import Conflict, InvalidInput

GZIP_LEVEL = 6  # zlib's default: most of level 9's ratio at a fraction of its time
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WrittenFile:
    """A table file as written: rows, size in bytes, SHA-256."""

    rows: int
    size: int
    sha256: str


def write_table_file(
    path: Path, codec: RowCodec, batches: Iterable[Sequence[Sequence[Any]]]
) -> WrittenFile:
    """Write rows (in batches) to ``path`` as gzip-compressed JSON lines.

    The gzip header carries no time or name, so the same rows give the same bytes.
    """
    rows = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(
            filename="", fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0
        ) as out,
    ):
        for batch in batches:
            out.write(codec.encode_many(batch))
            rows += len(batch)
    sha = hashlib.sha256()
    with path.open("rb") as data:
        for chunk in iter(lambda: data.read(_CHUNK), b""):
            sha.update(chunk)
    return WrittenFile(rows=rows, size=path.stat().st_size, sha256=sha.hexdigest())


def pack(manifest: Manifest, work: Path, final: Path) -> Path:
    """Tar ``manifest.json`` and the table files found under ``work`` into ``final``.

    The archive is written as ``<final>.partial`` (mode 0600: it holds
    personal data and sealed relay passwords), synced, and only then linked
    to its final name, so a crash never leaves a file that looks complete.
    Raises Conflict when ``final`` already exists.
    """
    partial = final.with_name(final.name + ".partial")
    mtime = int(manifest.created_at.timestamp())
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                head = manifest_to_json(manifest)
                _add(tar, MANIFEST_NAME, io.BytesIO(head), len(head), mtime)
                for entry in manifest.tables:
                    with (work / entry.file).open("rb") as data:
                        _add(tar, entry.file, data, entry.size, mtime)
            raw.flush()
            os.fsync(raw.fileno())
        os.link(partial, final)  # unlike rename, never replaces an existing backup
    except FileExistsError as exc:
        raise Conflict(f"a backup named {final.name} already exists") from exc
    finally:
        partial.unlink(missing_ok=True)
    _fsync_dir(final.parent)
    return final


def _add(tar: tarfile.TarFile, name: str, data: IO[bytes], size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o600
    tar.addfile(info, data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def open_archive(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive opened for reading; tar errors become InvalidInput naming the file."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such backup file")
    try:
        with tarfile.open(path, mode="r:") as tar:
            yield tar
    except InvalidInput as exc:
        raise InvalidInput(f"{path.name}: {exc.message}") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"{path.name}: truncated or damaged backup archive ({exc})") from exc


def check_archive(path: Path) -> Manifest:
    """Read the manifest and prove every table file is whole, without touching a database.

    Checks: ``manifest.json`` is present and valid; every table file it names
    is present with its size and SHA-256, decompresses to its end, and holds
    as many rows as the manifest says; nothing else is in the archive.
    Raises InvalidInput (one line, naming the archive) otherwise.
    """
    with open_archive(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        manifest = parse_manifest(_member_bytes(tar, members, MANIFEST_NAME))
        expected = {MANIFEST_NAME} | {e.file for e in manifest.tables}
        if extra := sorted(set(members) - expected):
            raise InvalidInput(f"unexpected file {extra[0]} in the archive")
        for entry in manifest.tables:
            _check_sha256(tar, entry)
            rows = sum(chunk.count(b"\n") for chunk in _table_chunks(tar, entry))
            if rows != entry.rows:
                raise InvalidInput(
                    f"{entry.file} holds {rows} rows, the manifest says {entry.rows}"
                )
    return manifest


def read_table(tar: tarfile.TarFile, entry: TableEntry) -> Iterator[tuple[Any, ...]]:
    """The rows of a table file, decoded (a megabyte of text at a time), one by one.

    The bytes are hashed on the way; a file that no longer matches its
    SHA-256 raises InvalidInput after its last row, so a caller loading in
    one transaction rolls back.
    """
    codec = RowCodec(entry.columns)
    rest = b""
    for chunk in _table_chunks(tar, entry):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if lines:
            yield from codec.decode_many(lines)
    if rest:
        raise InvalidInput(f"{entry.file} ends in the middle of a row")


def _member_file(tar: tarfile.TarFile, entry: TableEntry) -> IO[bytes]:
    """The open member of a table file, after checking it is there with its size."""
    member = tar.getmember(entry.file) if entry.file in tar.getnames() else None
    data = tar.extractfile(member) if member is not None and member.isfile() else None
    if data is None:
        raise InvalidInput(f"the archive lacks {entry.file}: truncated or incomplete")
    if member is not None and member.size != entry.size:
        raise InvalidInput(f"{entry.file} is {member.size} bytes, the manifest says {entry.size}")
    return data


def _check_sha256(tar: tarfile.TarFile, entry: TableEntry) -> None:
    with _member_file(tar, entry) as data:
        hashed = _HashingReader(data)
        hashed.drain()
    if hashed.hexdigest() != entry.sha256:
        raise InvalidInput(f"corrupt backup: {entry.file} does not match its SHA-256")


def _table_chunks(tar: tarfile.TarFile, entry: TableEntry) -> Iterator[bytes]:
    """Decompressed chunks of a table file; its SHA-256 is checked after the last one."""
    data = _member_file(tar, entry)
    hashed = _HashingReader(data)
    try:
        with data, gzip.GzipFile(fileobj=hashed, mode="rb") as unzipped:
            yield from iter(lambda: unzipped.read(_CHUNK), b"")
            hashed.drain()
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:
        raise InvalidInput(f"corrupt backup: {entry.file} does not decompress ({exc})") from exc
    if hashed.hexdigest() != entry.sha256:
        raise InvalidInput(f"corrupt backup: {entry.file} does not match its SHA-256")


def _member_bytes(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    member = members.get(name)
    data = tar.extractfile(member) if member is not None and member.isfile() else None
    if data is None:
        raise InvalidInput(f"the archive has no {name}: not a Herald backup, or truncated")
    with data:
        return data.read()


class _HashingReader:
    """A read-only file wrapper that hashes every byte read through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner, self._sha = inner, hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self._sha.update(data)
        return data

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("a hashed stream is read once, front to back")

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
