"""One URL -> one ``.bin`` line: fetch with retries, decode, thumbnail, encode.

:func:`fetch_one` is what each downloader thread runs (see
:mod:`vixml_lib.images.download`). Only ``http``, ``https`` and ``file`` URLs are
fetched. Timeouts, 5xx/408/425/429 answers and connection errors are *transient* and
retried with exponential backoff; 404 and other 4xx, bodies that are empty, too large or
not an image are *permanent* and not retried. The image is made RGB (EXIF orientation,
transparency on white), thumbnailed to fit within ``size`` x ``size`` and encoded as a
base64 JPEG line. ``fetch_one`` never raises an ``Exception``: failures come back as a
:class:`FetchResult` with a short reason.
"""
from __future__ import annotations

import dataclasses
import http.client
import io
import time
import urllib.error
import urllib.parse
import urllib.request

from PIL import Image

from .store import encode_image_line, to_rgb

__all__ = ["FetchResult", "fetch_one"]

MAX_BYTES = 50 * 1024 * 1024  # refuse image responses larger than this
_USER_AGENT = "vixml-workbench/0.1 (image downloader; python-urllib)"
_SCHEMES = ("http", "https", "file")
_RETRY_HTTP = {408, 425, 429}


@dataclasses.dataclass
class FetchResult:
    """What fetching one URL gave: an encoded line, or why not."""

    ok: bool
    line: bytes = b""  # base64 JPEG, when ok
    reason: str = ""  # when not ok
    attempts: int = 0


class _Permanent(Exception):
    """A failure that retrying will not fix."""


class _Transient(Exception):
    """A failure worth retrying (timeout, 5xx, connection trouble)."""


def _url_error(e: urllib.error.URLError) -> Exception:
    """The _Permanent / _Transient failure an ``URLError`` stands for."""
    r = e.reason
    if isinstance(r, TimeoutError):  # socket.timeout is TimeoutError
        return _Transient("timeout")
    if isinstance(r, (FileNotFoundError, IsADirectoryError)):
        return _Permanent("file not found")
    if isinstance(r, PermissionError):
        return _Permanent("permission denied")
    if isinstance(r, OSError):
        return _Transient(f"connection error ({type(r).__name__})")
    return _Permanent(f"url error ({r})")


def _fetch_bytes(opener: urllib.request.OpenerDirector, url: str, timeout: float, max_bytes: int) -> tuple[bytes, str]:
    """One request. Returns (body, content-type); raises _Permanent or _Transient."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    try:
        with opener.open(req, timeout=timeout) as resp:
            ctype = resp.headers.get("Content-Type", "") if resp.headers is not None else ""
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        code = int(e.code)
        try:
            e.close()
        except Exception:
            pass
        if code >= 500 or code in _RETRY_HTTP:
            raise _Transient(f"http {code}") from None
        raise _Permanent(f"http {code}") from None
    except urllib.error.URLError as e:
        raise _url_error(e) from None
    except TimeoutError:  # socket.timeout is TimeoutError
        raise _Transient("timeout") from None
    except http.client.InvalidURL as e:
        raise _Permanent(f"invalid url ({e})") from None
    except (http.client.HTTPException, ConnectionError) as e:
        raise _Transient(f"connection error ({type(e).__name__})") from None
    except OSError as e:
        raise _Transient(f"connection error ({type(e).__name__})") from None
    if len(data) > max_bytes:
        raise _Permanent(f"too large (more than {max_bytes} bytes)")
    if not data:
        raise _Permanent("empty response")
    return data, (ctype or "").split(";")[0].strip()


def _encode_thumbnail(data: bytes, ctype: str, size: int, quality: int) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            img = to_rgb(im)
    except Exception as e:  # UnidentifiedImageError, truncated files, decompression bombs...
        kind = "too many pixels" if isinstance(e, Image.DecompressionBombError) else "not a readable image"
        raise _Permanent(f"{kind} ({len(data)} bytes, content-type {ctype or 'unknown'})") from None
    img.thumbnail((size, size))
    return encode_image_line(img, "JPEG", quality=quality)


def fetch_one(
    url: str,
    opener: urllib.request.OpenerDirector,
    timeout: float,
    retries: int,
    backoff: float,
    size: int,
    quality: int,
    max_bytes: int = MAX_BYTES,
) -> FetchResult:
    """Fetch, decode, thumbnail and encode one URL, with retries. Never raises an Exception."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in _SCHEMES:
        return FetchResult(False, reason=f"unsupported url scheme {scheme!r}" if scheme else "not a url (no scheme)")
    attempts = 0
    reason = ""
    while True:
        attempts += 1
        try:
            data, ctype = _fetch_bytes(opener, url, timeout, max_bytes)
            line = _encode_thumbnail(data, ctype, size, quality)
            return FetchResult(True, line=line, attempts=attempts)
        except _Permanent as e:
            return FetchResult(False, reason=str(e), attempts=attempts)
        except _Transient as e:
            reason = str(e)
        except Exception as e:  # anything unexpected: record it, do not kill the run
            return FetchResult(False, reason=f"error ({type(e).__name__}: {e})", attempts=attempts)
        if attempts > retries:
            return FetchResult(False, reason=reason, attempts=attempts)
        time.sleep(backoff * (2 ** (attempts - 1)))
