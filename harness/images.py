"""Input images for editing (FLUX.1-Kontext): what a request may carry, the rules it obeys, the size the model
sees it at, and a card to edit.

A request's image is a uint8 array (H, W, 3), or where convenient (H, W) grey, (H, W, 4) RGBA, encoded bytes
(PNG, JPEG, WebP) or a path to such a file. pixels() turns any of them into RGB or raises InvalidRequest
naming the rule it breaks. The model sees it at fit()'s size, resized as diffusers resizes it (PIL's Lanczos),
so every target conditions on the same pixels.
"""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from harness.types import InvalidRequest

MIN_SIDE = 16   # one packed latent token; diffusers floors the sides to 16 before it reads the aspect ratio
FITS = {
    "preferred": "the resolution Kontext was trained at nearest the input's aspect ratio, as diffusers' "
                 "FluxKontextPipeline chooses it by default",
    "request": "the request's height x width",
}
# (width, height), about 1 MP each: the resolutions FLUX.1-Kontext was trained at (diffusers'
# PREFERRED_KONTEXT_RESOLUTIONS, from Black Forest Labs' own list)
PREFERRED = [(672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
             (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
             (1456, 720), (1504, 688), (1568, 672)]


def describe(value: Any) -> str:
    """A short name for an image value in an error: never its pixels or bytes."""
    if isinstance(value, np.ndarray):
        return f"<{value.dtype} array {'x'.join(map(str, value.shape))}>"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value):,} bytes>"
    if isinstance(value, (str, Path)):
        return repr(str(value)[:120])
    return f"<{type(value).__name__}>"


def fail(value: Any, rule: str):
    raise InvalidRequest(f"image={describe(value)}: {rule}")


def pixels(value: Any, max_side: int = 4096) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, or InvalidRequest naming the rule it breaks. Encoded images are
    measured from their header before a pixel is decoded, so a huge one costs nothing."""
    array = rgb(value, max_side)
    check_sides(value, array.shape[0], array.shape[1], max_side)
    return array


def rgb(value: Any, max_side: int | None = None) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, its sides unjudged (an encoded one's beyond max_side are refused
    before decoding)."""
    value = read(value)
    if isinstance(value, bytes):
        return decode(value, max_side)
    if not isinstance(value, np.ndarray):
        fail(value, "must be a uint8 array, encoded image bytes or a path to an image file")
    if value.dtype != np.uint8:
        fail(value, "must be uint8 (0-255 per channel)")
    if value.ndim >= 2 and 0 in value.shape[:2]:
        fail(value, f"has no pixels: each side must be at least {MIN_SIDE}")
    if value.ndim == 3 and value.shape[2] in (1, 4):
        return np.asarray(Image.fromarray(value[..., 0] if value.shape[2] == 1 else value).convert("RGB"))
    if value.ndim == 2:
        return np.repeat(value[..., None], 3, axis=2)
    if not (value.ndim == 3 and value.shape[2] == 3):
        fail(value, "must be (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) grey")
    return np.ascontiguousarray(value)


def check_sides(value: Any, height: int, width: int, max_side: int) -> None:
    if not (MIN_SIDE <= height <= max_side and MIN_SIDE <= width <= max_side):
        fail(value, f"is {width}x{height}; each side must be from {MIN_SIDE} to {max_side} pixels")


def check(value: Any, max_side: int) -> tuple[int, int]:
    """(height, width) of the image, or InvalidRequest naming the rule it breaks, at the cost of an encoded
    image's header: its pixels are decoded where they are used (pixels()), so a request refused for another
    reason, or for lack of room, never pays for them."""
    value = read(value)
    height, width = (header(value).size[::-1] if isinstance(value, bytes) else rgb(value).shape[:2])
    check_sides(value, height, width, max_side)
    return height, width


def read(value: Any) -> Any:
    """A path's bytes; any other value as it is."""
    if isinstance(value, (str, Path)):
        if not Path(value).is_file():
            fail(value, "no such file")
        return Path(value).read_bytes()
    return bytes(value) if isinstance(value, (bytearray, memoryview)) else value


def header(data: bytes) -> Image.Image:
    """The encoded image opened: its size and mode read, not a pixel decoded yet."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        fail(data, "is not an image file PIL can identify (PNG, JPEG, WebP, ...)")
    except (OSError, ValueError, SyntaxError) as e:
        fail(data, f"is not a decodable image ({type(e).__name__}: {str(e)[:120]})")


def decode(data: bytes, max_side: int | None) -> np.ndarray:
    image = header(data)
    if max_side is not None:
        check_sides(data, image.height, image.width, max_side)  # from the header: nothing decoded yet
    try:
        return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        fail(data, f"is not a decodable image ({type(e).__name__}: {str(e)[:120]})")


def encode(value: Any) -> bytes:
    """The image as bytes to send: encoded bytes and files as they are (the server judges them), arrays as
    lossless PNG (so the server conditions on exactly these pixels)."""
    value = read(value)
    if isinstance(value, bytes):
        return value
    out = io.BytesIO()
    Image.fromarray(rgb(value)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def digest(value: Any) -> dict[str, Any]:
    """What identifies an image in a golden key: its pixels' sha256 and shape."""
    array = rgb(value)
    return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(), "shape": list(array.shape)}


def fit(height: int, width: int, policy: str, request_size: tuple[int, int]) -> tuple[int, int]:
    """(height, width) the model sees an input of height x width at, under `policy` (FITS)."""
    if policy == "request":
        return request_size
    h, w = height - height % 16, width - width % 16  # diffusers reads the aspect ratio after flooring to 16
    _, pw, ph = min((abs(w / h - pw / ph), pw, ph) for pw, ph in PREFERRED)
    return ph, pw


def source(request, max_side: int = 4096) -> np.ndarray:
    """The request's image as the model sees it: RGB at fit()'s size."""
    image = pixels(request.image, max_side)
    height, width = fit(*image.shape[:2], request.image_fit, (request.height, request.width))
    return resized(image, height, width)


def resized(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 at height x width by PIL's Lanczos, as diffusers' VaeImageProcessor resizes."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), resample=Image.Resampling.LANCZOS))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixels: how a huge image begins, in 45 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")


def card(height: int = 256, width: int = 256) -> np.ndarray:
    """An image to edit: a colour gradient with a disc, a bar and a checked square (edges and flat areas, so a
    similarity metric has structure to find). The same pixels on every machine."""
    y, x = np.mgrid[0:height, 0:width]
    card = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1),
                     np.full_like(x, 96, dtype=float)], axis=2).astype(np.uint8)
    image = Image.fromarray(card)
    draw = ImageDraw.Draw(image)
    s = min(height, width)
    draw.ellipse([width // 2 - s // 4, height // 2 - s // 4, width // 2 + s // 4, height // 2 + s // 4],
                 fill=(250, 220, 40))
    draw.rectangle([0, height - s // 8, width - 1, height - 1], fill=(20, 40, 160))
    cell = max(s // 16, 1)
    for i in range(4):
        for j in range(4):
            if (i + j) % 2 == 0:
                draw.rectangle([cell * (i + 1), cell * (j + 1), cell * (i + 2) - 1, cell * (j + 2) - 1],
                               fill=(255, 255, 255))
    return np.asarray(image)
