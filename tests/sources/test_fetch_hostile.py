"""URL rows from strangers: endless, dripping, lying and redirecting servers, odd URLs, and private
addresses. Every fetch is bounded, recorded in url_status.jsonl, and a row of its own; none stops a scan.

The server listens on 127.0.0.1 for the module's lifetime; every handler loop is bounded.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from helpers import near_copy, run


class Hostile(http.server.BaseHTTPRequestHandler):
    asked: list = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        Hostile.asked.append(self.path)
        path = unquote(self.path)
        photo = self.server.photo
        if path in ("/ok.jpg", "/a photo é.jpg"):
            self._send(200, photo, {"Content-Type": "image/jpeg"})
        elif path == "/endless":                       # no length, 64 KiB chunks, bounded at 64 MiB
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(1024):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif path == "/drip":                          # one byte every 0.5 s, bounded at 60 bytes
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(60):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass
        elif path == "/silent":                        # accepts, then never answers (bounded at 30 s)
            for _ in range(60):
                time.sleep(0.5)
                if getattr(self.server, "closing", False):
                    break
        elif path == "/liar":                          # says 100,000 bytes, sends 10, closes
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(photo[:10])
            self.close_connection = True
        elif path == "/to-ftp":
            self._send(302, b"", {"Location": "ftp://127.0.0.1/secret.jpg"})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        else:
            self._send(404, b"", {})

    def _send(self, code, body, headers):
        self.send_response(code)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


STATUS = {"ok.jpg": "ok", "a photo é.jpg": "ok", "endless": "too large", "drip": "too slow", "silent": "too slow",
          "liar": "truncated", "to-ftp": "refused: scheme ftp", "loop": "refused: too many redirects"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, photos):
    import io
    buf = io.BytesIO()
    photos["rocket"].resize((96, 96)).save(buf, "JPEG", quality=92)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    httpd.photo = buf.getvalue()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.closing = True
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def hostile_embeddings(hostile, tmp_path_factory, photos):
    """clip-retrieval output whose metadata names the hostile URLs; every row gets the generation's vector."""
    from imgextract.demo.tiny import save_tiny_clip
    from imgextract.models.embedders import load_embedder
    root = tmp_path_factory.mktemp("hostile")
    clip = save_tiny_clip(root / "clip")
    vector = load_embedder(f"clip:{clip}", "cpu").embed([photos["rocket"].resize((96, 96))])
    (root / "emb" / "img_emb").mkdir(parents=True)
    (root / "emb" / "metadata").mkdir()
    urls = [f"{hostile}/{name}" for name in STATUS]
    np.save(root / "emb" / "img_emb" / "img_emb_0.npy", np.repeat(vector, len(urls), 0).astype(np.float16))
    pd.DataFrame({"url": urls, "caption": [f"row {i}" for i in range(len(urls))]}).to_parquet(
        root / "emb" / "metadata" / "metadata_0.parquet")
    gens = root / "gens"
    gens.mkdir()
    near_copy(photos["rocket"].resize((96, 96)), 0).save(gens / "rocket.png")
    return {"root": root, "clip": clip, "gens": gens, "n": len(urls)}


def build(data, name, env):
    code, out, err = run("index", "build", data["root"] / "emb", "--name", name, "--embeddings", "--embedder",
                         f"clip:{data['clip']}", env_extra=env)
    assert code == 0, out + err


def test_hostile_servers_are_bounded_recorded_and_skipped(hostile_embeddings, tmp_path):
    data = hostile_embeddings
    env = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "IMGEXTRACT_CACHE": str(tmp_path / "cache"),
           "IMGEXTRACT_ALLOW_PRIVATE_URLS": "1", "IMGEXTRACT_FETCH_MAX_BYTES": "1000000",
           "IMGEXTRACT_FETCH_SECONDS": "3"}
    build(data, "h", env)
    # every row is a candidate; the whole scan is bounded by the caps (the timeout is only the test's guard)
    code, out, err = run("scan", data["gens"], "--index", "h", "-k", str(data["n"]), "--relative-n", "0",
                         "--out", tmp_path / "s", env_extra=env, timeout=120)
    assert code == 0 and "Traceback" not in err, err
    status = {}
    for line in (tmp_path / "ix" / "h" / "url_status.jsonl").read_text().splitlines():
        rec = json.loads(line)
        status[unquote(rec["url"].rsplit("/", 1)[1])] = rec["status"]
    for name, want in STATUS.items():
        assert status[name].startswith(want), (name, status[name])
    m = pd.read_parquet(tmp_path / "s" / "matches.parquet")
    available = m.set_index(m["train_path"].map(lambda p: unquote(p.rsplit("/", 1)[1])))["pixels"]
    assert (available[["ok.jpg", "a photo é.jpg"]] == "available").all()
    assert (available.drop(["ok.jpg", "a photo é.jpg"]) == "unavailable").all()
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [Path(r["url"]).name for r in summary["memorized_images"]][:1] == ["ok.jpg"]
    # guard in a serving path: the same hostile candidates never read as a verdict of their own
    code, out, err = run("guard", data["gens"] / "rocket.png", "--index", "h", "-k", str(data["n"]),
                         env_extra=env, timeout=120)
    assert code == 1 and "Traceback" not in err, out + err


def test_private_addresses_are_refused_without_connecting(hostile_embeddings, tmp_path):
    data = hostile_embeddings
    env = {"IMGEXTRACT_INDEX_DIR": str(tmp_path / "ix"), "IMGEXTRACT_CACHE": str(tmp_path / "cache"),
           "IMGEXTRACT_ALLOW_PRIVATE_URLS": "0"}
    build(data, "p", env)
    Hostile.asked.clear()
    code, out, err = run("scan", data["gens"], "--index", "p", "-k", str(data["n"]), "--relative-n", "0",
                         "--out", tmp_path / "s", env_extra=env, timeout=120)
    assert code == 0, err
    assert Hostile.asked == []                       # not one request reached the server
    statuses = [json.loads(line)["status"] for line in
                (tmp_path / "ix" / "p" / "url_status.jsonl").read_text().splitlines()]
    assert len(statuses) == data["n"] and set(statuses) == {"refused: private address"}
    m = pd.read_parquet(tmp_path / "s" / "matches.parquet")
    assert (m["pixels"] == "unavailable").all() and not m["memorized"].any()
