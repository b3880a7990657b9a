"""Images sent in a chat: checked by their content (magic bytes, then decoded by Pillow - never by the
file name), bounded in bytes and pixels, stored under `<data folder>/chat/uploads/`, with a thumbnail,
and served only to the room's participants: its visitor, the agents who held it, supervisors."""

from __future__ import annotations

import hashlib
import io
import secrets
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from sqlmodel import Session

from callcenter.errors import Invalid, NotFound
from chat import services
from chat.models import ChatMessage, ChatRoom, ChatUpload, MessageKind, Sender
from chat.validation import clean_client_id

# Magic bytes -> (mime, extension, Pillow format).
FORMATS: tuple[tuple[bytes, str, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png", "PNG"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg", "JPEG"),
    (b"GIF87a", "image/gif", "gif", "GIF"),
    (b"GIF89a", "image/gif", "gif", "GIF"),
)
MAX_PIXELS = 40_000_000  # decompression bombs: a small file that decodes to gigabytes
THUMB_PX = 320
FOLDER = Path("chat") / "uploads"


class TooLarge(Invalid):
    status = 413


@dataclass(frozen=True)
class Checked:
    mime: str
    ext: str
    width: int
    height: int


def check(data: bytes, *, max_bytes: int) -> Checked:
    """What the image is, from its content; `Invalid` (field `file`) when it is not a PNG, JPEG, GIF or
    WebP that decodes, `TooLarge` past `max_bytes` or `MAX_PIXELS`."""
    if len(data) > max_bytes:
        raise TooLarge(f"an image has at most {max_bytes} bytes", field="file")
    if not data:
        raise Invalid("the file is empty", field="file")
    found = next(((mime, ext, fmt) for magic, mime, ext, fmt in FORMATS if data.startswith(magic)), None)
    if found is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        found = ("image/webp", "webp", "WEBP")
    if found is None:
        raise Invalid("only PNG, JPEG, GIF and WebP images can be sent", field="file")
    mime, ext, fmt = found
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != fmt:
                raise Invalid("the file's content does not match its image type", field="file")
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise TooLarge(f"an image has at most {MAX_PIXELS} pixels", field="file")
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError):
        raise Invalid("the image cannot be read", field="file") from None
    return Checked(mime, ext, width, height)


def _thumbnail(data: bytes, path: Path) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.thumbnail((THUMB_PX, THUMB_PX))
            img = opened.convert("RGB") if opened.mode not in ("RGB", "L") else opened
            img.save(path, "JPEG", quality=80)
        return True
    except (OSError, ValueError):
        return False


def store(
    session: Session,
    *,
    room: ChatRoom,
    sender: Sender,
    data: bytes,
    data_dir: Path,
    max_bytes: int,
    now: float,
    out: services.Outbox,
    agent_id: int | None = None,
    client_id: str | None = None,
) -> ChatMessage:
    """Check, store and thumbnail an image, and post it as an image message in the room."""
    from chat import rooms

    if not rooms.is_open(room.state):
        raise Invalid("this chat has ended", field="state")
    checked = check(data, max_bytes=max_bytes)
    upload_id = secrets.token_hex(16)
    folder = data_dir / FOLDER / str(room.id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{upload_id}.{checked.ext}"
    path.write_bytes(data)
    thumb = folder / f"{upload_id}.thumb.jpg"
    has_thumb = _thumbnail(data, thumb)
    session.add(
        ChatUpload(
            id=upload_id,
            room_id=room.id or 0,
            sender=sender.value,
            mime=checked.mime,
            size=len(data),
            width=checked.width,
            height=checked.height,
            path=str(path.relative_to(data_dir)),
            thumb_path=str(thumb.relative_to(data_dir)) if has_thumb else "",
            sha256=hashlib.sha256(data).hexdigest(),
            created_at=now,
        )
    )
    session.flush()
    payload = {
        "upload_id": upload_id,
        "mime": checked.mime,
        "width": checked.width,
        "height": checked.height,
        "size": len(data),
        "url": f"/api/chat/uploads/{upload_id}",
        "thumb_url": f"/api/chat/uploads/{upload_id}/thumb" if has_thumb else None,
    }
    msg = services.post(
        session,
        room=room,
        sender=sender,
        kind=MessageKind.IMAGE,
        payload=payload,
        agent_id=agent_id,
        now=now,
        out=out,
        client_id=clean_client_id(client_id),
    )
    return msg


def get(session: Session, upload_id: str) -> ChatUpload:
    upload = session.get(ChatUpload, upload_id) if len(upload_id) <= 32 else None
    if upload is None:
        raise NotFound("no such image")
    return upload


def read(upload: ChatUpload, *, data_dir: Path, thumb: bool = False) -> tuple[bytes, str]:
    """The stored bytes and their type (the thumbnail is always JPEG)."""
    rel = upload.thumb_path if thumb else upload.path
    if not rel:
        raise NotFound("no thumbnail for this image")
    path = (data_dir / rel).resolve()
    if data_dir.resolve() not in path.parents:
        raise NotFound("no such image")
    try:
        return path.read_bytes(), ("image/jpeg" if thumb else upload.mime)
    except FileNotFoundError:
        raise NotFound("the image file is gone") from None
