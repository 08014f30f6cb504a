"""The release guard as an HTTP service: a generation service posts every output, and learns whether
it substantially replicates an indexed training image, with that image's source and licence.

FastAPI on uvicorn: a maintained ASGI stack that writes the OpenAPI description from the endpoints'
own types, and whose server stops gracefully on SIGTERM (requests in flight finish, new ones are
refused). The index is memory-mapped and the embedder loaded once (a :class:`Guard`); checks run on a
bounded pool of worker threads, and when the pool and its queue are full the answer is 503 with
``Retry-After``. Whatever is posted is hostile until decoded: bodies are read up to ``max_bytes``,
images are opened from memory by ``open_rgb`` (nothing is written to disk), and every bad input is
a 4xx that says what was wrong.
"""


import asyncio
import hashlib
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from imgextract.app.guard import ORIGINS, Guard
from imgextract.errors import InputError
from imgextract.sources.images import BadImage, open_rgb
from imgextract.app.settings import ServeConfig

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


def read_api_keys(path: Path) -> tuple[str, ...]:
    """One key per line (blank lines and # comments ignored); an empty file is refused."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"--api-key-file {path} cannot be read ({exc.strerror})", "pass a readable file") from None
    keys = tuple(ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
    if not keys:
        raise InputError(f"--api-key-file {path} holds no key", "write one key per line")
    return keys


class Checker:
    """The guard behind the endpoints: one index and embedder, a bounded pool, and the counts /metrics shows."""

    def __init__(self, cfg: ServeConfig):
        from threadpoolctl import threadpool_limits
        # one BLAS thread per check for the service's life: the pool runs checks side by side, and nested
        # BLAS threads made the verdict's small matrix products many times slower (bench_scan.py)
        self._blas = threadpool_limits(limits=1, user_api="blas")
        self.cfg = cfg
        self.guard = Guard(cfg.index, k=cfg.k, threshold=cfg.threshold, min_share=cfg.min_share)
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="check")
        self.slots = threading.BoundedSemaphore(cfg.workers + cfg.queue)
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int, str], int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        ix = self.guard.index
        self.fingerprint = _fingerprint(ix.path, ix.embedder)

    def health(self) -> dict:
        ix = self.guard.index
        return {"status": "ok", "index": ix.path.name, "rows": len(ix.table),
                "embedder": ix.embedder.get("spec"), "embedder_fingerprint": ix.embedder.get("weights_fingerprint")
                or hashlib.sha256(str(ix.embedder.get("spec")).encode()).hexdigest()[:16],
                "index_fingerprint": self.fingerprint, "workers": self.cfg.workers, "queue": self.cfg.queue}

    def check_bytes(self, data: bytes, origin: str) -> tuple[int, dict]:
        """(HTTP status, answer) for one posted image: the guard's verdict, or what was wrong with it."""
        if len(data) > self.cfg.max_bytes:
            return 413, {"error": f"the image is {len(data):,} bytes, over the {self.cfg.max_bytes:,}-byte limit"}
        if not data:
            return 415, {"error": "the body is empty: post the image's bytes"}
        try:
            image = open_rgb(Path("posted image"), data=data, min_side=4)
        except BadImage as bad:
            status = 415 if bad.reason.startswith("not an image") else 422
            return status, {"error": f"posted image: {bad.reason}"}
        v = self.guard.check(image, origin)
        if not v.tested:
            return 503, {"error": f"the index could not answer: {v.term.removeprefix('not tested: ')}"}
        row = self.guard.index.table.iloc[v.train_id] if v.train_id is not None else None
        caption = None if row is None or row.get("caption") is None else str(row["caption"])
        return 200, {
            "verdict": v.kind if v.memorized else "none", "memorized": v.memorized, "term": v.term,
            "copied_share": round(v.share, 4) if v.memorized else 0.0, "copy": v.what() if v.memorized else None,
            "replication": v.replication, "blocked": v.blocked,
            "training_image": None if row is None else {
                "id": v.train_id, "caption": caption, "source": v.source, "license": v.license,
                "tiled_l2": None if v.tiled_l2 is None else round(v.tiled_l2, 4), "tiled_l2_exact": v.exact,
                "phash_distance": v.phash_distance},
            "notice": notice(v), "seconds": round(v.seconds, 4)}

    def record(self, endpoint: str, status: int, verdict: str, seconds: float) -> None:
        with self.lock:
            key = (endpoint, status, verdict)
            self.requests[key] = self.requests.get(key, 0) + 1
            i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
            self.latency[i] += 1
            self.latency_sum += seconds
            self.latency_count += 1

    def metrics(self) -> str:
        """Prometheus text: requests by endpoint, status and verdict; a latency histogram."""
        with self.lock:
            lines = ["# HELP imgextract_requests_total Requests answered, by endpoint, status and verdict.",
                     "# TYPE imgextract_requests_total counter"]
            for (endpoint, status, verdict), n in sorted(self.requests.items()):
                lines.append(f'imgextract_requests_total{{endpoint="{endpoint}",status="{status}",'
                             f'verdict="{verdict}"}} {n}')
            lines += ["# HELP imgextract_check_seconds Time to answer a check, queueing included.",
                      "# TYPE imgextract_check_seconds histogram"]
            total = 0
            for bound, n in zip(LATENCY_BUCKETS, self.latency):
                total += n
                lines.append(f'imgextract_check_seconds_bucket{{le="{bound}"}} {total}')
            lines.append(f'imgextract_check_seconds_bucket{{le="+Inf"}} {self.latency_count}')
            lines.append(f"imgextract_check_seconds_sum {self.latency_sum:.6f}")
            lines.append(f"imgextract_check_seconds_count {self.latency_count}")
        return "\n".join(lines) + "\n"


def notice(v) -> str:
    """One sentence for the end user, naming the source and the licence."""
    if not v.memorized and v.replication == "replication":
        return (f"This image replicates a training image from {v.source} (not near-exactly: a near-copy under "
                f"compression, blur, resizing or tone), under {v.license or 'an unknown licence'}; its terms may apply.")
    if not v.memorized:
        return "This image does not substantially replicate any indexed training image."
    lic = v.license if v.license else "an unknown licence"
    return (f"This image substantially replicates a training image ({v.what()}) from {v.source}, "
            f"under {lic}; its terms may apply to this output.")


def _fingerprint(path: Path, embedder: dict) -> str:
    """What identifies this build of the index: its record and the size and time of its files."""
    h = hashlib.sha256(json.dumps(embedder, sort_keys=True, default=str).encode())
    for name in ("index.faiss", "images.parquet", "vectors.f16"):
        p = Path(path) / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def create_app(cfg: ServeConfig, checker: Checker | None = None):
    """The ASGI application (FastAPI). ``checker``: an already loaded one (tests, benchmarks)."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    checker = checker or Checker(cfg)
    app = FastAPI(title="imgextract guard", version="1",
                  description="Does a generated image substantially replicate an indexed training image? "
                              "Post the image's bytes; the answer names the training image, its source and "
                              "licence, and gives a notice for the end user.")
    app.state.checker = checker

    def authorised(request: Request) -> None:
        if not cfg.api_keys:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        ok = False
        for key in cfg.api_keys:   # constant time, and every key compared
            ok |= hmac.compare_digest(given.encode(), key.encode())
        if not ok:
            raise HTTPException(401, "a bearer key is required (Authorization: Bearer KEY)",
                                headers={"WWW-Authenticate": "Bearer"})

    async def body_of(request: Request, limit: int) -> bytes:
        """The body, read up to ``limit`` bytes: a larger one is refused before it is all in memory."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise HTTPException(413, f"the body is {int(length):,} bytes, over the limit of {limit:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(413, f"the body is over the limit of {limit:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def images_of(request: Request, many: bool) -> list[bytes]:
        envelope = 64 * 1024                                 # multipart boundaries and headers
        body = await body_of(request, (cfg.max_bytes + envelope) * (cfg.max_batch if many else 1))
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            from starlette.datastructures import UploadFile
            from starlette.formparsers import MultiPartException, MultiPartParser

            async def again():
                yield body
            try:
                form = await MultiPartParser(request.headers, again(), max_files=cfg.max_batch + 1,
                                             max_fields=cfg.max_batch + 1).parse()
            except MultiPartException as exc:
                raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            data = [await f.read() for f in files]
            if not data:
                raise HTTPException(400, "the multipart body holds no file: send the image as a file field")
            return data if many else data[:1]
        return [body]

    async def run_check(data: bytes, origin: str) -> tuple[int, dict]:
        if not checker.slots.acquire(blocking=False):
            return 503, {"error": "busy: every worker and queue slot is taken; retry shortly"}
        try:
            return await asyncio.get_running_loop().run_in_executor(checker.pool, checker.check_bytes, data, origin)
        finally:
            checker.slots.release()

    def origin_of(origin: str) -> str:
        if origin not in ORIGINS:
            raise HTTPException(400, f"origin '{origin}': use ordinary or targeted")
        return origin

    binary = {"type": "string", "format": "binary"}
    errors = {str(code): {"description": what} for code, what in (
        (400, "malformed request"), (401, "a bearer key is required"), (413, "body over --max-bytes"),
        (415, "not an image"), (422, "over the pixel limit, truncated, or too small"),
        (503, "busy (Retry-After), or the index could not answer"))}
    one = {"requestBody": {"required": True, "content": {
        "image/png": {"schema": binary}, "image/jpeg": {"schema": binary}, "image/webp": {"schema": binary},
        "application/octet-stream": {"schema": binary},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"image": binary}, "required": ["image"]}}}},
        "responses": errors}
    many = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {"images": {"type": "array", "items": binary, "maxItems": cfg.max_batch}},
        "required": ["images"]}}}}, "responses": errors}

    @app.post("/v1/check", dependencies=[Depends(authorised)], openapi_extra=one,
              summary="Check one image (raw body, or a multipart file field)")
    async def check(request: Request, origin: str = "ordinary"):
        t0 = time.perf_counter()
        origin = origin_of(origin)
        status, answer = await run_check((await images_of(request, False))[0], origin)
        if status == 200:
            answer["seconds"] = round(time.perf_counter() - t0, 4)
        checker.record("check", status, answer.get("verdict", "error"), time.perf_counter() - t0)
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(answer, status_code=status, headers=headers)

    @app.post("/v1/check/batch", dependencies=[Depends(authorised)], openapi_extra=many,
              summary="Check up to --max-batch images (multipart, one file field each)")
    async def check_batch(request: Request, origin: str = "ordinary"):
        t0 = time.perf_counter()
        origin = origin_of(origin)
        images = await images_of(request, True)
        if len(images) > cfg.max_batch:
            raise HTTPException(413, f"{len(images)} images, over the batch limit of {cfg.max_batch}")
        results = await asyncio.gather(*(run_check(d, origin) for d in images))
        answers = [{"status": s, **a} for s, a in results]
        for s, a in results:
            checker.record("batch", s, a.get("verdict", "error"), time.perf_counter() - t0)
        return JSONResponse({"results": answers, "seconds": round(time.perf_counter() - t0, 4)})

    @app.get("/healthz", summary="The index and embedder this service answers from")
    async def healthz():
        return checker.health()

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(checker.metrics(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        checker.record(request.url.path.strip("/").replace("/", "_") or "root", exc.status_code, "error", 0.0)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


def serve(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, say=print) -> None:
    """Load once, then serve until SIGTERM/SIGINT (requests in flight finish; new ones are refused)."""
    import uvicorn
    app = create_app(cfg)
    checker = app.state.checker
    say(f"imgextract guard: index {checker.guard.index.path.name} ({len(checker.guard.index.table):,} rows) on "
        f"http://{host}:{port} ({cfg.workers} workers, queue {cfg.queue}; OpenAPI at /docs and /openapi.json)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=30)
    _Server(config).run()
    say("imgextract guard: stopped (requests in flight answered)")


def _server_class():
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping on SIGTERM/SIGINT as usual (in-flight requests finish, new ones are
        refused) but exiting 0 afterwards instead of re-raising the signal: a stop asked for is no failure."""

        @contextlib.contextmanager
        def capture_signals(self):
            old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)
    return Server


def _Server(config):
    return _server_class()(config)
