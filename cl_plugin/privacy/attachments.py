"""Making a feedback attachment safe to store: its type read from its bytes, images re-encoded without any
metadata, code and text redacted like every other text.

An image's type is never taken from the caller (its kind, file name or content type): the bytes must start
with the PNG, JPEG or WebP signature and Pillow must decode them as that format. The pixels are then copied
into a new image and encoded again, so nothing of the original file but its pixels survives: no EXIF (GPS
position, camera serial, time), XMP, ICC profile, PNG text chunk or trailing data. Code and text must be UTF-8
and go through the same :class:`~cl_plugin.privacy.Sanitizer` as every other text, so an API key in a code
snippet is stored as ``[API_KEY]``. The result is addressed by the SHA-256 of the stored bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from cl_plugin.config import FeedbackConfig
from cl_plugin.errors import (
    AttachmentTooLargeError,
    InvalidRecordError,
    MissingDependencyError,
    UnsupportedAttachmentError,
)
from cl_plugin.privacy.sanitize import Sanitizer
from cl_plugin.records import Attachment

__all__ = ["IMAGE_TYPES", "CleanAttachment", "clean_attachments", "sniff_image"]

#: The image formats stored, by Pillow's format name: (media type, file signature test).
IMAGE_TYPES: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class CleanAttachment:
    """An attachment as stored: sanitized bytes and what they are.

    Attributes:
        sha256: hex SHA-256 of ``data``, the attachment's address.
        kind: ``"code"``, ``"image"`` or ``"text"``.
        media_type: ``image/png``, ``image/jpeg``, ``image/webp`` or ``text/plain; charset=utf-8``.
        data: the stored bytes (re-encoded image, or redacted UTF-8 text).
        filename: the file's last path part, redacted, or None.
        language: a code snippet's language, or None.
    """

    sha256: str
    kind: str
    media_type: str
    data: bytes
    filename: str | None
    language: str | None

    @property
    def size(self) -> int:
        """Stored bytes."""
        return len(self.data)

    def meta(self) -> dict[str, Any]:
        """What may be shown or exported of it: everything but the bytes."""
        return {
            "sha256": self.sha256,
            "kind": self.kind,
            "media_type": self.media_type,
            "size": self.size,
            "filename": self.filename,
            "language": self.language,
        }


def sniff_image(data: bytes) -> str | None:
    """The image format the bytes' signature names (``"PNG"``, ``"JPEG"``, ``"WEBP"``), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def clean_attachments(
    items: Sequence[Any] | None, sanitizer: Sanitizer, limits: FeedbackConfig | None = None
) -> list[CleanAttachment]:
    """Check, sanitize and address a feedback's attachments.

    Args:
        items: :class:`~cl_plugin.records.Attachment` objects or equivalent dicts, or None.
        sanitizer: redacts code and text (and file names) as every other text is.
        limits: counts and sizes allowed; the defaults of :class:`~cl_plugin.config.FeedbackConfig` if None.

    Returns:
        The attachments as they are stored, in the order given.

    Raises:
        InvalidRecordError: an attachment is malformed, a text is not UTF-8 or an image cannot be decoded
            (the error names the field, e.g. ``attachments[0].content``).
        AttachmentTooLargeError: too many attachments, or one larger than the limits.
        UnsupportedAttachmentError: an image that is not PNG, JPEG or WebP.
        MissingDependencyError: an image, without Pillow installed.
    """
    if items is None:
        return []
    limits = limits or FeedbackConfig()
    if isinstance(items, str | bytes | dict) or not isinstance(items, Sequence):
        raise InvalidRecordError(
            f"attachments must be a list of attachments (got {type(items).__name__})", field="attachments"
        )
    if len(items) > limits.max_attachments:
        raise AttachmentTooLargeError(
            f"attachments holds {len(items)} attachments; at most {limits.max_attachments} are allowed per "
            "feedback (feedback.max_attachments): send the rest with another feedback",
            field="attachments",
        )
    text_sanitizer = dataclasses.replace(sanitizer, max_text_length=limits.max_text_bytes)
    out = []
    for i, item in enumerate(items):
        att = Attachment.coerce(item, i)
        where = f"attachments[{i}]"
        content = bytes(att.content) if isinstance(att.content, bytearray | memoryview) else att.content
        if att.kind == "image":
            assert isinstance(content, bytes)  # coerce refuses a string image
            data, media_type = _clean_image(content, f"{where}.content", limits)
        else:
            data, media_type = (
                _clean_text(content, f"{where}.content", limits, text_sanitizer),
                TEXT_MEDIA_TYPE,
            )
        out.append(
            CleanAttachment(
                sha256=hashlib.sha256(data).hexdigest(),
                kind=att.kind,
                media_type=media_type,
                data=data,
                filename=None if att.filename is None else _filename(att.filename, sanitizer),
                language=None if att.language is None else att.language.lower(),
            )
        )
    return out


def _filename(name: str, sanitizer: Sanitizer) -> str | None:
    """The last part of a path (a client's folder names say who and where), redacted."""
    base = PurePosixPath(name.replace("\\", "/")).name
    return sanitizer.text(base) if base else None


def _clean_text(content: bytes | str, field: str, limits: FeedbackConfig, sanitizer: Sanitizer) -> bytes:
    raw = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    if len(raw) > limits.max_text_bytes:
        raise AttachmentTooLargeError(
            f"{field} is {len(raw):,} bytes; code and text attachments may have at most "
            f"{limits.max_text_bytes:,} (feedback.max_text_bytes): send an excerpt",
            field=field,
        )
    if isinstance(content, bytes):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRecordError(
                f"{field} is not UTF-8 text (byte 0x{content[exc.start]:02x} at offset {exc.start}); "
                "send UTF-8, or an image as kind 'image'",
                field=field,
            ) from None
    else:
        text = content
    return sanitizer.text(text).encode("utf-8")


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("image attachments", "web", "pillow") from None
    return Image


def _clean_image(data: bytes, field: str, limits: FeedbackConfig) -> tuple[bytes, str]:
    """The image's pixels, re-encoded in its own format without any metadata, and its media type."""
    if len(data) > limits.max_image_bytes:
        raise AttachmentTooLargeError(
            f"{field} is {len(data):,} bytes; images may have at most {limits.max_image_bytes:,} "
            "(feedback.max_image_bytes): send a smaller or more compressed image",
            field=field,
        )
    fmt = sniff_image(data)
    if fmt is None:
        raise UnsupportedAttachmentError(
            f"{field} is not a PNG, JPEG or WebP image (its first bytes match none of them); send one of "
            "those formats, or code and text as kind 'code' or 'text'",
            field=field,
        )
    Image = _pillow()
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            width, height = img.size
            if max(width, height) > limits.max_image_side:
                raise AttachmentTooLargeError(
                    f"{field} is {width}x{height} pixels; images may be at most {limits.max_image_side} "
                    f"pixels wide and tall (feedback.max_image_side): scale it down",
                    field=field,
                )
            img.seek(0)  # an animated image keeps its first frame
            pixels = _upright(img, Image)
    except (AttachmentTooLargeError, MissingDependencyError):
        raise
    except Image.DecompressionBombError:
        raise AttachmentTooLargeError(
            f"{field} decodes to more pixels than allowed; scale it down", field=field
        ) from None
    except Exception as exc:  # Pillow raises many types for damaged files (OSError, SyntaxError, ...)
        raise InvalidRecordError(
            f"{field} starts like a {fmt} image but cannot be decoded ({type(exc).__name__}: "
            f"{str(exc)[:120]}); the file may be truncated or damaged: send it again",
            field=field,
        ) from None
    # Lossy formats step down in quality when the re-encoded file would pass the limit the original kept.
    for quality in (90, 75, 60) if fmt in ("JPEG", "WEBP") else (None,):
        out = io.BytesIO()
        pixels.save(out, fmt, **({} if quality is None else {"quality": quality}))
        encoded = out.getvalue()
        if len(encoded) <= limits.max_image_bytes:
            break
    else:
        raise AttachmentTooLargeError(
            f"{field} is {len(encoded):,} bytes once re-encoded; images may have at most "
            f"{limits.max_image_bytes:,} (feedback.max_image_bytes): send a smaller image",
            field=field,
        )
    return encoded, IMAGE_TYPES[fmt]


def _upright(img: Any, Image: Any) -> Any:
    """A new image holding only the pixels of ``img`` (turned as its EXIF orientation says), no metadata."""
    from PIL import ImageOps

    turned = ImageOps.exif_transpose(img) or img
    keep = "RGBA" if turned.mode in ("RGBA", "LA", "PA") or "transparency" in turned.info else "RGB"
    if turned.mode == "L" or (turned.mode == "RGB" and keep == "RGB") or turned.mode == keep:
        mode = turned.mode
    else:
        mode = keep
    if img.format == "JPEG" and mode not in ("L", "RGB"):
        mode = "RGB"
    source = turned if turned.mode == mode else turned.convert(mode)
    # frombytes builds an image with an empty info dict: no EXIF, XMP, ICC profile or text chunk to carry.
    return Image.frombytes(mode, source.size, source.tobytes())
