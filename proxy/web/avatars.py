"""Profile pictures: an uploaded PNG or JPEG, checked to be one, re-encoded as a small PNG.

Nothing of the uploaded file is served back as it came: Pillow decodes it (refusing other
formats, and images so large that decoding them would be an attack), and what is kept and
served is a fresh PNG of at most ``SIDE`` x ``SIDE`` pixels.
"""

from __future__ import annotations

import io
import warnings
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import BadRequest, PayloadTooLarge

MAX_BYTES = 5 * 2**20
MAX_PIXELS = 40_000_000
SIDE = 256
FORMATS = {"PNG", "JPEG"}


def reencode(source: IO[bytes], size: int) -> bytes:
    """The picture in ``source`` as a PNG of at most SIDE x SIDE, or 400/413 saying why."""
    if size > MAX_BYTES:
        raise PayloadTooLarge(f"The picture is larger than {MAX_BYTES // 2**20} MiB")
    if size == 0:
        raise BadRequest("Choose a picture first", field="file")
    source.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=sorted(FORMATS)) as image:
                if image.width * image.height > MAX_PIXELS:
                    raise BadRequest("The picture has too many pixels", field="file")
                image.load()
                picture = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest("The picture must be a PNG or JPEG image", field="file") from None
    except (OSError, SyntaxError, ValueError):
        raise BadRequest("The picture could not be read: is it damaged?", field="file") from None
    picture = picture.convert("RGBA" if "A" in picture.getbands() else "RGB")
    picture.thumbnail((SIDE, SIDE))
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()
