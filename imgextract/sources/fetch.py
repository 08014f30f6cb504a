"""Training images named only by URL (a LAION metadata table): fetched on demand, cached, never twice.

URL tables come from strangers, so a fetch is bounded and fenced:

- **bounded**: a body over ``max_bytes`` (default 32 MiB, ``IMGEXTRACT_FETCH_MAX_BYTES``) is cut
  off and recorded as ``too large``; one URL, redirects and retries included, takes at most
  ``total_seconds`` (default 30 s, ``IMGEXTRACT_FETCH_SECONDS``), however slowly a server drips,
  else ``too slow``. Bodies stream to a temporary file, never wholly into memory, and must be images.
- **fenced**: only ``http``/``https``, and only hosts that resolve to public addresses: loopback,
  private, link-local, multicast and reserved addresses are refused without connecting
  (``refused: private address``), after every redirect too (at most ``MAX_REDIRECTS``); the
  connection goes to the address that was checked. ``IMGEXTRACT_ALLOW_PRIVATE_URLS=1`` lifts the
  address rule, for tests and for indexes served on one's own network.
- **quoted as browsers do**: spaces and non-ASCII characters are percent-encoded, host names IDNA-encoded.

Scan and guard decode only their candidates, so only the candidates' URLs are fetched, into
``$IMGEXTRACT_CACHE/images/`` (content-addressed by the URL's sha256). At most ``PARALLEL`` run at
once, and transient failures (timeouts, 5xx, connection errors) are retried with backoff within
the time cap. Each URL's outcome (``ok``, ``404``, ``too large``, ``refused: private address``,
...) is appended to ``url_status.jsonl`` in the index folder, so a dead link is not asked twice.
Every failure is a recorded status and an ``OSError`` for the caller (an unavailable row), never a crash.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

TIMEOUT = 10.0                     # one socket operation
TOTAL_SECONDS = 30.0               # one URL, redirects and retries included
MAX_BYTES = 32 * 1024 * 1024       # one body
MAX_REDIRECTS = 5
RETRIES = 2
PARALLEL = 8
STATUS_FILE = "url_status.jsonl"
ALLOW_PRIVATE = "IMGEXTRACT_ALLOW_PRIVATE_URLS"
_URL = re.compile(r"^(https?):/+")
_CHUNK = 1 << 16


def is_url(text) -> bool:
    return bool(_URL.match(str(text)))


def normalise(text) -> str:
    """``Path`` folds ``http://`` into ``http:/``; put it back."""
    return _URL.sub(lambda m: f"{m.group(1)}://", str(text), count=1)


def cache_dir() -> Path:
    return Path(os.environ.get("IMGEXTRACT_CACHE", ".cache/imgextract")) / "images"


class Refused(OSError):
    """A URL not fetched, by rule or because it failed: its text is the recorded status."""


def quote_url(url: str) -> str:
    """Percent-encode what a browser would (spaces, non-ASCII, control characters); IDNA host names."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise Refused(f"bad url (host name: {exc})") from None
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise Refused("bad url (port)") from None
    netloc = host if port is None else f"{host}:{port}"
    keep = "/%:@!$&'()*+,;=~-._"
    return urlunsplit((parts.scheme.lower(), netloc, quote(parts.path, safe=keep),
                       quote(parts.query, safe=keep + "?"), ""))


def allow_private() -> bool:
    return os.environ.get(ALLOW_PRIVATE, "") == "1"


def public_address(host: str, port: int) -> tuple:
    """The first address ``host`` resolves to, when every one is public; else :class:`Refused`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise Refused(f"unreachable (name: {exc})") from None
    if not infos:
        raise Refused("unreachable (no address)")
    if not allow_private():
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            mapped = getattr(ip, "ipv4_mapped", None)
            if not (mapped or ip).is_global or (mapped or ip).is_multicast:
                raise Refused("refused: private address")
    return infos[0]


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to an address already checked (no second DNS answer can move it)."""

    def __init__(self, info: tuple, host: str, timeout: float):
        super().__init__(host, timeout=timeout)
        self._info = info

    def connect(self):
        family, kind, proto, _, address = self._info
        self.sock = socket.socket(family, kind, proto)
        self.sock.settimeout(self.timeout)
        self.sock.connect(address)


class _PinnedTLS(_Pinned):
    default_port = 443

    def connect(self):
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


class Fetcher:
    """Fetch-through cache with a per-URL status log."""

    def __init__(self, status_file: Path | None = None, timeout: float = TIMEOUT, retries: int = RETRIES,
                 parallel: int = PARALLEL, max_bytes: int | None = None, total_seconds: float | None = None):
        self.status_file = status_file
        self.timeout, self.retries = timeout, retries
        self.max_bytes = max_bytes or int(os.environ.get("IMGEXTRACT_FETCH_MAX_BYTES") or MAX_BYTES)
        self.total_seconds = total_seconds or float(os.environ.get("IMGEXTRACT_FETCH_SECONDS") or TOTAL_SECONDS)
        self._slots = threading.BoundedSemaphore(parallel)
        self._lock = threading.Lock()
        self.status: dict[str, str] = {}
        if status_file is not None and Path(status_file).is_file():
            for line in Path(status_file).read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                    self.status[rec["url"]] = rec["status"]
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, url: str) -> bytes:
        url = normalise(url)
        cached = cache_dir() / hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()
        if cached.is_file():
            return cached.read_bytes()
        known = self.status.get(url)
        if known is not None and known != "ok":
            raise OSError(f"{url}: {known} (recorded in {self.status_file}; not asked again)")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            status = self._download(url, tmp)
            if status == "ok" and not _looks_like_image(tmp):
                status = "not an image"
            self._record(url, status)
            if status != "ok":
                raise OSError(f"{url}: {status}")
            os.replace(tmp, cached)
        finally:
            tmp.unlink(missing_ok=True)
        return cached.read_bytes()

    def _download(self, url: str, dest: Path) -> str:
        deadline = time.monotonic() + self.total_seconds
        status = "error"
        for attempt in range(self.retries + 1):
            with self._slots:
                try:
                    return self._follow(url, dest, deadline)
                except Refused as exc:
                    return str(exc)                                   # by rule, or permanent: not retried
                except _Transient as exc:
                    status = str(exc)
            if time.monotonic() + 0.2 * 2 ** attempt >= deadline:
                return "too slow" if status == "timeout" else status
            time.sleep(0.2 * 2 ** attempt)
        return status

    def _follow(self, url: str, dest: Path, deadline: float) -> str:
        for _ in range(MAX_REDIRECTS + 1):
            url = quote_url(url)
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise Refused(f"refused: scheme {parts.scheme or 'none'}")
            if not parts.hostname:
                raise Refused("bad url (no host)")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            info = public_address(parts.hostname, port)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Refused("too slow")
            kind = _PinnedTLS if parts.scheme == "https" else _Pinned
            conn = kind(info, parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}",
                        min(self.timeout, left))
            try:
                conn.request("GET", urlunsplit(("", "", parts.path or "/", parts.query, "")),
                             headers={"User-Agent": "imgextract (memorization audit)", "Accept": "image/*"})
                resp = conn.getresponse()
                if resp.status in (301, 302, 303, 307, 308):
                    target = resp.getheader("Location")
                    if not target:
                        raise Refused(f"{resp.status} without a Location")
                    url = urljoin(url, target)
                    continue
                if resp.status >= 400:
                    if resp.status >= 500 or resp.status == 429:
                        raise _Transient(str(resp.status))
                    raise Refused(str(resp.status))
                length = resp.getheader("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise Refused("too large")
                self._stream(conn, resp, dest, deadline)
                return "ok"
            except (TimeoutError, socket.timeout):
                raise _Transient("timeout") from None
            except http.client.IncompleteRead:
                raise Refused("truncated (the body is shorter than its Content-Length)") from None
            except (http.client.HTTPException, ssl.SSLError, ConnectionError, OSError) as exc:
                if isinstance(exc, Refused):
                    raise
                raise _Transient(f"unreachable ({type(exc).__name__}: {str(exc)[:120]})") from None
            finally:
                conn.close()
        raise Refused("refused: too many redirects")

    def _stream(self, conn, resp, dest: Path, deadline: float) -> None:
        size = 0
        with open(dest, "wb") as f:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Refused("too slow")
                if conn.sock is not None:
                    conn.sock.settimeout(min(self.timeout, left))
                try:
                    chunk = resp.read1(_CHUNK) if hasattr(resp, "read1") else resp.read(_CHUNK)
                except (TimeoutError, socket.timeout):
                    raise Refused("too slow" if deadline - time.monotonic() <= 0.05 else "timeout") from None
                if not chunk:
                    if resp.length not in (None, 0):
                        raise http.client.IncompleteRead(b"", resp.length)
                    return
                size += len(chunk)
                if size > self.max_bytes:
                    raise Refused("too large")
                f.write(chunk)

    def _record(self, url: str, status: str) -> None:
        with self._lock:
            self.status[url] = status
            if self.status_file is not None:
                try:
                    with open(self.status_file, "a") as f:
                        f.write(json.dumps({"url": url, "status": status, "time": time.time()}) + "\n")
                except OSError:
                    pass   # the log is a saving, not the result


class _Transient(Exception):
    """A failure worth one more try (timeout, 5xx, a dropped connection)."""


def _looks_like_image(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
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
