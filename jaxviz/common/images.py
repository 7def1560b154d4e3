"""Image files and arrays: reading, mode conversion, resize-and-crop (host side, numpy/PIL)."""

from __future__ import annotations

import io
import math
import os
import stat
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxviz.common.errors import ImageError, UsageError

# Resizing the short side to S makes an image of up to MAX_ASPECT·S² pixels before the crop: this
# bounds the memory of a thin image (1×15000 px would become 224×3.4M), whatever its pixel count.
MAX_ASPECT = 32

__all__ = ["to_uint8",
    "MAX_ASPECT", "ImageError", "read_image", "decode_image_bytes", "resize_center_crop", "resize_center_crop01",
    "resize_batch01", "as_uint8_batch", "EVAL_CROP_FRACTION",
]

# The reference evaluation of the EfficientNet-Lite weights keeps the central 87.5 % of the photo.
EVAL_CROP_FRACTION = 0.875


def read_image(path: str | os.PathLike, *, draft_size: int | None = None) -> tuple[np.ndarray, bool]:
    """Reads an image file as RGB uint8.

    Args:
      path: any format Pillow decodes.
      draft_size: if given, JPEGs may be decoded at a reduced scale whose short side is still
        ``>= draft_size`` (DCT scaling: 2-4x faster on large photos about to be shrunk anyway).

    Returns:
      ``(image [H,W,3] uint8, converted)`` where ``converted`` says the file was not RGB
      (grayscale, palette, RGBA, CMYK, 16-bit...) and was converted.

    Raises:
      ImageError: missing, unreadable, not an image, or corrupt.
    """
    return _decode(_open_regular(path, str(path)), str(path), draft_size)


def _open_regular(path, label: str):
    """Opens a regular file for reading; anything else (FIFO, socket, device) is refused unread."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait; it changes nothing for files
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{label}: cannot be opened ({e.strerror or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "is a directory" if stat.S_ISDIR(mode) else "is not a regular file (FIFO, socket or device)"
        raise ImageError(f"{label}: {what}, not an image")
    return os.fdopen(fd, "rb")


def decode_image_bytes(
    data: bytes, *, label: str = "image bytes", draft_size: int | None = None
) -> tuple[np.ndarray, bool]:
    """Like :func:`read_image` for an encoded image held in memory; ``label`` names it in errors."""
    return _decode(io.BytesIO(data), label, draft_size)


def _decode(source, label: str, draft_size: int | None) -> tuple[np.ndarray, bool]:
    try:
        with Image.open(source) as im:
            w, h = im.size
            if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
                raise ImageError(f"{label}: {w}x{h} px is too elongated to resize and crop "
                                 f"(aspect ratio above {MAX_ASPECT}:1)")
            if draft_size is not None:
                im.draft(im.mode, (draft_size, draft_size))  # no-op for non-JPEG formats
            im.load()
            converted = im.mode != "RGB"
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            elif im.mode.startswith("I;16") or im.mode == "I":
                arr = np.asarray(im, np.float64)
                scale = 255.0 / max(arr.max(), 1.0)
                im = Image.fromarray((arr * scale).astype(np.uint8))
            rgb = np.asarray(im.convert("RGB"), np.uint8)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file (or a format Pillow cannot decode)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: too many pixels to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{label}: corrupt or truncated image ({e})") from None
    finally:
        if hasattr(source, "close"):
            source.close()
    return rgb, converted


def _resized_shape(h: int, w: int, size: int, crop_fraction: float = 1.0) -> tuple[int, int]:
    """``(width, height)`` after resizing the short side to ``floor(size / crop_fraction)``."""
    if not 0.0 < crop_fraction <= 1.0:
        raise UsageError(f"crop fraction must be in (0, 1], got {crop_fraction}")
    if min(h, w) < 1 or max(h, w) > MAX_ASPECT * min(h, w):
        raise ImageError(f"a {w}x{h} px image is too elongated to resize and crop (aspect ratio above {MAX_ASPECT}:1)")
    short = max(size, math.floor(size / crop_fraction + 1e-9))  # 1e-9: 224 / 0.875 stays 256
    if h <= w:
        return max(short, math.floor(w * short / h)), short
    return short, max(short, math.floor(h * short / w))


def resize_center_crop(image: np.ndarray, size: int, *, crop_fraction: float = 1.0) -> np.ndarray:
    """Resizes the short side to ``floor(size / crop_fraction)`` (bicubic) and centre-crops ``size``.

    With ``crop_fraction=EVAL_CROP_FRACTION`` (0.875) this is the reference evaluation transform of
    the EfficientNet-Lite weights (README "Preprocessing"): 224 px models see the central 224×224 of
    the photo resized to a 256 px short side. ``1.0`` resizes the short side straight to ``size``.

    Geometry (as in the reference pipeline): the long side becomes ``floor(long * short' / short)``;
    the crop starts at ``round((side' - size) / 2)`` on each axis. Pillow's bicubic filter is
    antialiased when shrinking.

    Args:
      image: [H,W,3] uint8.
      size: output side in pixels.
      crop_fraction: share of the resized short side that the crop keeps, in ``(0, 1]``.

    Returns:
      [size,size,3] uint8.
    """
    h, w = image.shape[:2]
    new_w, new_h = _resized_shape(h, w, size, crop_fraction)
    im = Image.fromarray(np.asarray(image, np.uint8))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.BICUBIC)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)


def resize_center_crop01(image: np.ndarray, size: int) -> np.ndarray:
    """:func:`resize_center_crop` for float images in ``[0, 1]``: the same filter and geometry.

    Each channel is resized as a 32-bit float Pillow image, so no precision is lost to uint8
    and the result equals the uint8 path up to its rounding (< 1/255).

    Args:
      image: [H,W,C] float.
      size: output side in pixels.

    Returns:
      [size,size,C] float32.
    """
    image = np.asarray(image, np.float32)
    h, w = image.shape[:2]
    new_w, new_h = _resized_shape(h, w, size)
    left, top = round((new_w - size) / 2), round((new_h - size) / 2)
    if (new_w, new_h) == (w, h):
        return np.ascontiguousarray(image[top:top + size, left:left + size])
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]))
                      .resize((new_w, new_h), Image.BICUBIC)) for c in range(image.shape[-1])]
    out = np.stack(out, axis=-1)[top:top + size, left:left + size]
    # bicubic overshoots at edges; the uint8 path clips to 0..255, this one to the input's own range
    return np.clip(out, image.min(), image.max()).astype(np.float32)


def resize_batch01(images: np.ndarray, size: int) -> np.ndarray:
    """``[N,H,W,C]`` float images → ``[N,size,size,C]`` float32 with :func:`resize_center_crop01`."""
    images = np.asarray(images, np.float32)
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([resize_center_crop01(im, size) for im in images]) if len(images) else \
        np.zeros((0, size, size, images.shape[-1]), np.float32)


def as_uint8_batch(images: np.ndarray | Sequence[np.ndarray], size: int, *,
                   crop_fraction: float = 1.0) -> np.ndarray:
    """Turns one image [H,W,3], a batch [N,H,W,3] or a list of images into [N,size,size,3].

    Every image goes through :func:`resize_center_crop` (with ``crop_fraction=1.0`` an image already
    ``size`` × ``size`` is returned unchanged).
    """
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    out = []
    for im in images:
        im = np.asarray(im)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=-1)
        if im.ndim != 3 or im.shape[-1] not in (1, 3, 4):
            raise ImageError(f"expected images of shape [H,W,3], got {im.shape}")
        im = np.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im[..., :3]  # grey or RGBA → RGB
        if im.dtype != np.uint8:
            raise ImageError(f"expected uint8 images, got {im.dtype}")
        same = crop_fraction == 1.0 and im.shape[:2] == (size, size)
        out.append(im if same else resize_center_crop(im, size, crop_fraction=crop_fraction))
    return np.stack(out)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float image in [0, 1] → uint8."""
    return np.clip(np.round(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)
