"""Routes for CSV imports: upload (202, runs in the background), poll, error report.

The upload is a ``multipart/form-data`` body with a ``file`` part (the CSV)
and a ``lists`` field (list ids, comma-separated). It is streamed to the
data directory, never held in memory, and refused with 413 past
``HERALD_IMPORT_MAX_BYTES``. The import then runs in a thread of this node;
``GET /imports/{id}`` answers from the database on any node.
"""

# No "from __future__ import annotations" here: FastAPI reads route signatures
# at runtime, and their dependency aliases are local to the router factory.

import shutil
import tempfile
import threading
from pathlib import Path
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from herald.errors import InvalidInput
from herald.runtime import Runtime
from herald.services import import_jobs
from herald.services.auth import Principal
from herald.web.api.security import requires

# Room for the multipart boundaries and the small fields around the file.
_FORM_OVERHEAD = 64 * 1024
_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "lists"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "lists": {"type": "string", "description": "list ids: 1,2"},
                    },
                }
            }
        },
    }
}


def import_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["imports"])
    engine = runtime.engine
    viewer = Annotated[Principal, Depends(requires(runtime, "viewer"))]
    editor = Annotated[Principal, Depends(requires(runtime, "editor"))]
    folder = runtime.settings.data_dir / "imports"

    @router.post("/imports", status_code=202, openapi_extra=_UPLOAD_SCHEMA)
    async def upload(request: Request, _: editor) -> JSONResponse:
        """Upload a CSV into lists; poll ``GET /imports/{id}`` for progress."""
        limit = runtime.settings.import_max_bytes + _FORM_OVERHEAD
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(runtime.settings.import_max_bytes)
        bounded = Request(request.scope, _bounded(request.receive, limit))
        async with bounded.form(max_files=1, max_fields=10) as form:
            upload, list_ids = _fields(form.get("file"), form.get("lists"))
            path, size = await run_in_threadpool(_save, upload.file, folder)
        try:
            import_id = await run_in_threadpool(
                import_jobs.create_import,
                engine,
                list_ids=list_ids,
                filename=upload.filename or "upload.csv",
                node=runtime.node_name,
                bytes_total=size,
            )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        threading.Thread(
            target=import_jobs.run_import,
            args=(engine, import_id, path),
            name=f"herald-import-{import_id}",
            daemon=True,
        ).start()
        body = {"id": import_id, "status": "queued", "poll": f"/api/v1/imports/{import_id}"}
        return JSONResponse(body, status_code=202)

    @router.get("/imports/{import_id}")
    def progress(import_id: int, _: viewer) -> dict[str, Any]:
        """Status (queued, running, done, failed), counts and bytes read of total."""
        return import_jobs.get_import(engine, import_id)

    @router.get(
        "/imports/{import_id}/errors",
        response_class=Response,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    def errors(import_id: int, _: viewer) -> Response:
        """The refused rows as CSV (line, email, error), safe to open in a spreadsheet."""
        text = import_jobs.error_report(engine, import_id)
        return Response(
            text.encode("utf-8-sig"),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"'
            },
        )

    return router


def _fields(file: Any, lists: Any) -> tuple[UploadFile, list[int]]:
    if not isinstance(file, UploadFile):
        raise InvalidInput("send the CSV as the multipart part named file")
    if not isinstance(lists, str) or not lists.strip():
        raise InvalidInput("name the lists to import into: lists=1,2")
    try:
        ids = [int(part) for part in lists.split(",") if part.strip()]
    except ValueError:
        raise InvalidInput("lists must be list ids separated by commas") from None
    if not ids or any(i < 1 for i in ids):
        raise InvalidInput("lists must be list ids separated by commas")
    return file, ids


def _save(source: IO[bytes], folder: Path) -> tuple[Path, int]:
    """Copy the spooled upload into the data directory; returns (path, size)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".csv", delete=False) as target:
        shutil.copyfileobj(source, target, 1 << 20)
        return Path(target.name), target.tell()


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses a body longer than ``limit`` (for uploads sent chunked)."""
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _too_large(limit - _FORM_OVERHEAD)
        return message

    return bounded


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than the limit of {limit} bytes")
