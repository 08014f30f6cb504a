"""Training images named only by URL (a LAION metadata table): fetched on demand, cached, never twice.

Scan and guard decode only their candidates, so only the candidates' URLs are fetched, into
``$IMGEXTRACT_CACHE/images/`` (content-addressed by the URL's sha256). Requests have a timeout,
at most ``PARALLEL`` run at once, and transient failures (timeouts, 5xx, connection errors) are
retried with backoff. Each URL's outcome (``ok``, ``404``, ``timeout``, ``not an image``, ...)
is appended to ``url_status.jsonl`` in the index folder, so a dead link is not asked twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 10.0
RETRIES = 2
PARALLEL = 8
STATUS_FILE = "url_status.jsonl"
_URL = re.compile(r"^(https?):/+")


def is_url(text) -> bool:
    return bool(_URL.match(str(text)))


def normalise(text) -> str:
    """``Path`` folds ``http://`` into ``http:/``; put it back."""
    return _URL.sub(lambda m: f"{m.group(1)}://", str(text), count=1)


def cache_dir() -> Path:
    return Path(os.environ.get("IMGEXTRACT_CACHE", ".cache/imgextract")) / "images"


class Fetcher:
    """Fetch-through cache with a per-URL status log."""

    def __init__(self, status_file: Path | None = None, timeout: float = TIMEOUT, retries: int = RETRIES,
                 parallel: int = PARALLEL):
        self.status_file = status_file
        self.timeout, self.retries = timeout, retries
        self._slots = threading.BoundedSemaphore(parallel)
        self._lock = threading.Lock()
        self.status: dict[str, str] = {}
        if status_file is not None and Path(status_file).is_file():
            for line in Path(status_file).read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.status[rec["url"]] = rec["status"]
                except (ValueError, KeyError):
                    continue

    def get(self, url: str) -> bytes:
        url = normalise(url)
        cached = cache_dir() / hashlib.sha256(url.encode()).hexdigest()
        if cached.is_file():
            return cached.read_bytes()
        known = self.status.get(url)
        if known is not None and known != "ok":
            raise OSError(f"{url}: {known} (recorded in {self.status_file}; not asked again)")
        data, status = self._download(url)
        if data is not None and not _looks_like_image(data):
            data, status = None, "not an image"
        self._record(url, status)
        if data is None:
            raise OSError(f"{url}: {status}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cached)
        return data

    def _download(self, url: str) -> tuple[bytes | None, str]:
        status = "error"
        for attempt in range(self.retries + 1):
            with self._slots:
                try:
                    req = urllib.request.Request(url, headers={"User-Agent": "imgextract (memorization audit)"})
                    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                        return resp.read(), "ok"
                except urllib.error.HTTPError as exc:
                    status = str(exc.code)
                    if exc.code < 500 and exc.code != 429:
                        return None, status  # 404, 403, ...: permanent
                except TimeoutError:
                    status = "timeout"
                except (urllib.error.URLError, OSError) as exc:
                    reason = getattr(exc, "reason", exc)
                    status = "timeout" if "timed out" in str(reason) else f"unreachable ({reason})"
            time.sleep(0.2 * 2 ** attempt)
        return None, status

    def _record(self, url: str, status: str) -> None:
        with self._lock:
            self.status[url] = status
            if self.status_file is not None:
                with open(self.status_file, "a") as f:
                    f.write(json.dumps({"url": url, "status": status, "time": time.time()}) + "\n")


def _looks_like_image(data: bytes) -> bool:
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(BytesIO(data)) as im:
            im.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


_default = Fetcher()
_current = {"fetcher": _default}


def use_status_file(status_file: Path | None) -> None:
    """Record URL outcomes in this index folder (``open_index`` calls it)."""
    if status_file is None or _current["fetcher"].status_file == Path(status_file):
        return
    _current["fetcher"] = Fetcher(Path(status_file))


def get(url: str) -> bytes:
    return _current["fetcher"].get(url)
