"""The feedback endpoint: ``POST /api/feedback`` as a Starlette app a user mounts in their own ASGI app.

.. code-block:: python

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from cl_plugin.store import Store
    from cl_plugin.web.feedback import feedback_app

    app = Starlette(routes=[Mount("/", feedback_app(Store.from_url("sqlite:///feedback.db")))])

A post carries the fields of :meth:`CaptureHandler.record_feedback`, as JSON or as multipart form data with
file parts, and goes through ``store.feedback.record``: checked, redacted, attachments sniffed and
re-encoded, written in one transaction. Nothing is stored when anything is wrong; the answer is then JSON
``{"error": ..., "field": ...}`` with a status that says what kind of wrong:

* 400: the body is not JSON or form data as described, or names an unknown field;
* 401: a token is required and missing, or the token is malformed, forged or expired;
* 403: the token is for another interaction;
* 404: no such interaction;
* 413: the body, or an attachment, is larger than allowed (a body is refused before it is read in full);
* 415: the body is neither JSON nor form data, or an attachment is of a type not stored;
* 422: a field's value cannot be stored (a score out of range, text that is not UTF-8, a damaged image,
  an ``Idempotency-Key`` reused for other feedback).

A successful post answers 201 with ``feedback_id``, ``interaction_id``, ``created_at`` and the attachments'
metadata. A request sent again with the same ``Idempotency-Key`` header is stored once and answered with
the first response, across processes and on both engines. A feedback token (``Authorization: Bearer`` or a
``token`` field; see :func:`cl_plugin.privacy.tokens.mint_feedback_token`) scopes the post to its
interaction; the interaction id may then be left out.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Any

import orjson

from cl_plugin.config import FeedbackConfig, parse_section
from cl_plugin.errors import (
    AttachmentTooLargeError,
    FeedbackTokenError,
    InvalidRecordError,
    MissingDependencyError,
    StoreUnavailableError,
    UnknownInteractionError,
    UnsupportedAttachmentError,
)
from cl_plugin.privacy import safe_identifier
from cl_plugin.privacy.attachments import sniff_image
from cl_plugin.privacy.tokens import verify_feedback_token
from cl_plugin.store import Store

try:
    import anyio
    from starlette.applications import Starlette
    from starlette.datastructures import UploadFile
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
except ImportError:  # pragma: no cover - the extra is missing
    raise MissingDependencyError("the feedback endpoint", "web", "starlette") from None

__all__ = ["FEEDBACK_FIELDS", "feedback_app"]

#: The fields a post may carry (besides ``attachments`` and ``token``).
FEEDBACK_FIELDS = (
    "interaction_id",
    "run_id",
    "score",
    "thumbs",
    "correction",
    "comment",
    "value",
    "key",
    "source",
)
_FILE_FIELDS = ("attachments", "file", "files", "image", "code", "text")


class _Refused(Exception):
    """A request refused before anything is stored: its status, message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def feedback_app(
    store: Store,
    *,
    key: str | None = None,
    max_body_bytes: int | None = None,
    require_token: bool = False,
    limits: FeedbackConfig | dict[str, Any] | None = None,
) -> Starlette:
    """A Starlette app serving ``POST /api/feedback`` into ``store`` (see the module's description).

    Args:
        store: where feedback goes (set up when the app is built, if nobody did).
        key: the id hashing key: the one the capture handler or logger hashed ids with, which also signs
            the feedback tokens they mint (None: ``CL_PLUGIN_HASH_KEY``, else
            :func:`cl_plugin.privacy.id_hash_key`).
        max_body_bytes: the largest request body; by default room for the most attachments ``limits``
            allows, base64-encoded, and 1 MB of fields.
        require_token: refuse posts without a valid feedback token (401); otherwise a post without one
            names its interaction itself, and a post with one is held to the token's interaction.
        limits: attachment counts and sizes (the ``feedback`` config section).

    Returns:
        The app; mount it, or serve it as it is (``uvicorn module:app``).

    Raises:
        MissingDependencyError: Starlette is not installed (``pip install 'cl-plugin[web]'``).
    """
    limits = parse_section(FeedbackConfig, limits, prefix="feedback")
    if max_body_bytes is None:
        largest = max(limits.max_image_bytes, limits.max_text_bytes)
        max_body_bytes = math.ceil(limits.max_attachments * largest * 4 / 3) + 1_000_000
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int (got {max_body_bytes!r})")
    store.ensure_schema(write=True)
    endpoint = _Endpoint(store, key, max_body_bytes, require_token, limits)
    return Starlette(routes=[Route("/api/feedback", endpoint.post, methods=["POST"])])


class _Endpoint:
    def __init__(
        self, store: Store, key: str | None, max_body: int, require_token: bool, limits: FeedbackConfig
    ) -> None:
        self.store, self.key, self.max_body = store, key, max_body
        self.require_token, self.limits = require_token, limits
        # Writes into one database take turns: a few threads keep it busy, more only queue on its lock
        # (and on the GIL) and make every request slower. One limiter per event loop serving the app.
        self._threads = 4 if store.dialect == "sqlite" else 16
        self._limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()

    async def post(self, request: Request) -> JSONResponse:
        try:
            body = await self._body(request)
            fields, files = await self._fields(request, body)
            kwargs = self._feedback(fields, files)
            kwargs["interaction_id"] = self._interaction(request, fields)
            idempotency_key = request.headers.get("idempotency-key")
            row = await anyio.to_thread.run_sync(
                self._record, kwargs, idempotency_key, limiter=self._limiter()
            )
        except _Refused as refused:
            return _error(refused.status, refused.message, refused.field)
        return JSONResponse(
            {
                "feedback_id": row["feedback_id"],
                "interaction_id": row["interaction_id"],
                "created_at": row["created_at"],
                "attachments": row.get("attachments", []),
            },
            status_code=201,
        )

    def _limiter(self) -> anyio.CapacityLimiter | None:
        """This event loop's limiter (None under another async backend than asyncio: anyio's default)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = anyio.CapacityLimiter(self._threads)
        return limiter

    # -- reading the request --------------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it is known to be too large: by its length header, or while
        it streams in, before the rest is read."""
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise _Refused(400, "the Content-Length header is not a number", "Content-Length")
            if int(length) > self.max_body:
                raise _Refused(413, self._too_large(int(length)), "body")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise _Refused(413, self._too_large(size, at_least=True), "body")
                chunks.append(chunk)
        except ClientDisconnect:
            raise _Refused(400, "the client disconnected before the body was sent", "body") from None
        return b"".join(chunks)

    def _too_large(self, size: int, *, at_least: bool = False) -> str:
        return (
            f"the request body is {'more than ' if at_least else ''}{size:,} bytes; this endpoint takes at "
            f"most {self.max_body:,}: send fewer or smaller attachments"
        )

    async def _fields(self, request: Request, body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json":
            return _json_fields(body), []
        if media == "multipart/form-data":
            return await self._form_fields(request, body)
        raise _Refused(
            415,
            f"the body must be application/json or multipart/form-data (got {media or 'no Content-Type'})",
            "Content-Type",
        )

    async def _form_fields(
        self, request: Request, body: bytes
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(
                max_files=self.limits.max_attachments + 1, max_fields=50
            )
        except Exception as exc:  # malformed multipart: python-multipart and Starlette raise several types
            raise _Refused(400, f"the multipart body cannot be read ({str(exc)[:200]})", "body") from None
        fields: dict[str, Any] = {}
        files: list[dict[str, Any]] = []
        try:
            for name, item in form.multi_items():
                if isinstance(item, UploadFile):
                    if name not in _FILE_FIELDS:
                        raise _Refused(
                            400,
                            f"file part {name!r} is not known; send files as 'attachments' (type read from "
                            "the bytes), 'image', 'code' or 'text'",
                            name,
                        )
                    data = await item.read()
                    kind = name if name in ("image", "code", "text") else _kind_of(data)
                    files.append({"kind": kind, "content": data, "filename": item.filename})
                elif name in fields:
                    raise _Refused(400, f"field {name!r} is given twice", name)
                else:
                    fields[name] = item
        finally:
            await form.close()
        if "value" in fields:
            try:
                fields["value"] = orjson.loads(fields["value"])
            except orjson.JSONDecodeError:
                raise _Refused(422, "value must be JSON text in a form post", "value") from None
        if "score" in fields:
            try:
                fields["score"] = float(fields["score"])
            except ValueError:
                raise _Refused(
                    422, f"score must be a number (got {fields['score'][:40]!r})", "score"
                ) from None
        language = fields.pop("language", None)
        for f in files:
            if f["kind"] == "code" and language:
                f["language"] = language
        return fields, files

    def _feedback(self, fields: dict[str, Any], files: list[dict[str, Any]]) -> dict[str, Any]:
        """The keyword arguments of ``store.feedback.record`` (the interaction comes separately)."""
        known = {*FEEDBACK_FIELDS, "attachments", "token"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise _Refused(
                400, f"unknown field {unknown[0]!r}; the fields are: {', '.join(sorted(known))}", unknown[0]
            )
        kwargs = {name: fields[name] for name in FEEDBACK_FIELDS[2:] if name in fields}
        attachments = fields.get("attachments")
        if attachments is not None and not isinstance(attachments, list):
            raise _Refused(
                400, "attachments must be a list of {kind, filename, content_base64} objects", "attachments"
            )
        given = [*(attachments or []), *files]
        if given:
            kwargs["attachments"] = given
        return kwargs

    def _interaction(self, request: Request, fields: dict[str, Any]) -> str:
        """The interaction the post is for (as stored), held to the feedback token's when there is one."""
        named = [fields[k] for k in ("interaction_id", "run_id") if fields.get(k) is not None]
        for value in named:
            if not isinstance(value, str) or not value:
                raise _Refused(422, "interaction_id must be a non-empty string", "interaction_id")
        if len(set(named)) > 1:
            raise _Refused(400, "interaction_id and run_id name different interactions; give one", "run_id")
        token = fields.get("token")
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise _Refused(
                    401, "the Authorization header must be 'Bearer <feedback token>'", "Authorization"
                )
            if token is not None and token != value.strip():
                raise _Refused(400, "the token field and the Authorization header differ; send one", "token")
            token = value.strip()
        stored = safe_identifier(named[0], self.key) if named else None
        if token is None:
            if self.require_token:
                raise _Refused(
                    401,
                    "this endpoint needs a feedback token: send 'Authorization: Bearer <token>' or a token "
                    "field, as minted by CaptureHandler.feedback_token",
                    "token",
                )
            if stored is None:
                raise _Refused(
                    422, "interaction_id (or run_id) is missing: name the rated interaction", "interaction_id"
                )
            return stored
        if not isinstance(token, str):
            raise _Refused(401, "the feedback token must be a string", "token")
        try:
            return verify_feedback_token(self.key, token, interaction_id=stored)
        except FeedbackTokenError as exc:
            raise _Refused(403 if exc.reason == "wrong_interaction" else 401, str(exc), "token") from None

    # -- storing --------------------------------------------------------------------------------------

    def _record(self, kwargs: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        iid = kwargs.pop("interaction_id")
        try:
            return self.store.feedback.record(
                iid, **kwargs, hash_key=self.key, idempotency_key=idempotency_key, limits=self.limits
            )
        except AttachmentTooLargeError as exc:
            raise _Refused(413, str(exc), exc.field) from None
        except UnsupportedAttachmentError as exc:
            raise _Refused(415, str(exc), exc.field) from None
        except InvalidRecordError as exc:
            field = "Idempotency-Key" if exc.field == "idempotency_key" else exc.field
            raise _Refused(422, str(exc), field) from None
        except UnknownInteractionError as exc:
            raise _Refused(404, str(exc), "interaction_id") from None
        except MissingDependencyError as exc:
            raise _Refused(
                415, f"this server does not take image attachments: {exc}", "attachments"
            ) from None
        except StoreUnavailableError as exc:
            raise _Refused(503, f"the feedback store cannot be reached; try again ({exc})") from None
        except TypeError as exc:  # a JSON field of a type the store's checks never see (a list as key)
            raise _Refused(422, f"a field has the wrong type ({exc})") from None


def _json_fields(body: bytes) -> dict[str, Any]:
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, f"the body is not valid JSON ({exc})", "body") from None
    if not isinstance(fields, dict):
        raise _Refused(400, f"the body must be a JSON object (got {type(fields).__name__})", "body")
    return fields


def _kind_of(data: bytes) -> str:
    """An uploaded file's kind when its part does not say: an image if its bytes start like one."""
    return "image" if sniff_image(data) else "text"


def _error(status: int, message: str, field: str | None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)
