"""`imgextract serve`, started as users start it (the installed command, a subprocess on 127.0.0.1 with a
bounded lifetime) and called over HTTP: copies with their licence, clean images, every bad input as its
4xx, keys, a full queue, SIGTERM with a request in flight, and schemathesis against its own OpenAPI."""

from __future__ import annotations

import io
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import EXE, bomb_png, near_copy, run

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"]


@pytest.fixture(scope="module")
def licensed(tmp_path_factory, photos):
    """An index of six photographs from a table with URL and licence columns."""
    root = tmp_path_factory.mktemp("serve")
    (root / "train").mkdir()
    for n in NAMES:
        photos[n].resize((128, 128)).save(root / "train" / f"{n}.png")
    pd.DataFrame({"path": [f"train/{n}.png" for n in NAMES], "caption": [f"a photograph of {n}" for n in NAMES],
                  "url": [f"https://example.org/{n}.png" for n in NAMES],
                  "license": [f"CC BY 4.0 ({n})" for n in NAMES]}).to_csv(root / "train.csv", index=False)
    ix = {"IMGEXTRACT_INDEX_DIR": str(root / "ix")}
    code, out, err = run("index", "build", root / "train.csv", "--name", "srv", env_extra=ix)
    assert code == 0, err
    return {"root": root, "ix": ix}


class Server:
    """`imgextract serve` on a free loopback port; stopped (and killed if need be) on exit."""

    def __init__(self, env: dict, *args, python_path: Path | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        extra = {"PYTHONPATH": str(python_path)} if python_path else {}
        import os
        self.proc = subprocess.Popen([str(EXE), "serve", "--index", "srv", "--port", str(self.port), *map(str, args)],
                                     env={**os.environ, **env, **extra}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):                       # bounded: 60 s to load the index and embedder
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read())
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("the service did not start within 60 s")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode, self.proc.stderr.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def post(url: str, data: bytes, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "image/png", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), {k.lower(): v for k, v in e.headers.items()}


def png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_serve_answers_copies_with_their_licence_and_every_bad_input_with_its_4xx(licensed, photos, tmp_path):
    with Server(licensed["ix"], "--max-bytes", 300_000) as srv:
        health = json.loads(urllib.request.urlopen(srv.url + "/healthz", timeout=10).read())
        assert health["rows"] == 6 and health["index"] == "srv" and health["index_fingerprint"]
        code, answer, _ = post(srv.url + "/v1/check", png(near_copy(photos["rocket"].resize((128, 128)), 0)))
        assert code == 200 and answer["verdict"] == "whole" and answer["training_image"]["id"] == NAMES.index("rocket")
        assert "CC BY 4.0 (rocket)" in answer["notice"] and "https://example.org/rocket.png" in answer["notice"]
        code, answer, _ = post(srv.url + "/v1/check", png(photos["flower"].resize((128, 128))))
        assert code == 200 and answer["verdict"] == "none" and not answer["memorized"]
        bad = {415: b"not an image at all", 422: png(photos["coins"].resize((128, 128)))[:900]}
        bomb = tmp_path / "bomb.png"
        bomb_png(bomb)
        noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8))
        for want, data in [*bad.items(), (422, bomb.read_bytes()), (413, png(noisy))]:
            code, answer, _ = post(srv.url + "/v1/check", data)
            assert code == want and answer["error"], (want, code, answer)
        boundary = "imgextract-test"
        parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{i}.png\"\r\n"
                         f"Content-Type: image/png\r\n\r\n".encode() + d + b"\r\n"
                         for i, d in enumerate([png(photos["coffee"].resize((128, 128))), b"nope"]))
        code, answer, _ = post(srv.url + "/v1/check/batch", parts + f"--{boundary}--\r\n".encode(),
                               {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert code == 200 and [r["status"] for r in answer["results"]] == [200, 415]
        assert answer["results"][0]["verdict"] == "whole"
        metrics = urllib.request.urlopen(srv.url + "/metrics", timeout=10).read().decode()
        assert 'imgextract_requests_total{endpoint="check",status="200",verdict="whole"} 1' in metrics
        assert 'status="415"' in metrics and "imgextract_check_seconds_bucket" in metrics
        code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err


def test_a_key_is_required_when_given_and_never_logged(licensed, photos, tmp_path):
    (tmp_path / "keys.txt").write_text("# service keys\ns3cret-key-123\n")
    with Server(licensed["ix"], "--api-key-file", tmp_path / "keys.txt") as srv:
        image = png(photos["rocket"].resize((128, 128)))
        assert post(srv.url + "/v1/check", image)[0] == 401
        assert post(srv.url + "/v1/check", image, {"Authorization": "Bearer wrong"})[0] == 401
        code, answer, _ = post(srv.url + "/v1/check", image, {"Authorization": "Bearer s3cret-key-123"})
        assert code == 200 and answer["verdict"] == "whole"
        _, err = srv.stop()
    assert "s3cret" not in err


def test_a_wide_bind_without_a_key_is_warned_about(licensed):
    code, _, err = run("serve", "--index", "missing-index", "--host", "0.0.0.0", env_extra=licensed["ix"])
    assert code == 2 and "warning: listening on 0.0.0.0 without --api-key-file" in err


GATE_HOOK = """
import os, pathlib, time
import imgextract.app.guard as g
_check = g.Guard.check
def held(self, *a, **k):   # a check that waits at a gate the test opens (bounded: 60 s)
    gate = pathlib.Path(os.environ["IMGEXTRACT_TEST_GATE"])
    (gate / "started").touch()
    for _ in range(600):
        if (gate / "open").exists():
            break
        time.sleep(0.1)
    return _check(self, *a, **k)
g.Guard.check = held
"""


def test_a_full_queue_is_503_and_sigterm_lets_the_request_in_flight_finish(licensed, photos, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(GATE_HOOK)
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**licensed["ix"], "IMGEXTRACT_TEST_GATE": str(gate)}
    srv = Server(env, "--workers", 1, "--queue", 0, python_path=hook)
    try:
        image = png(near_copy(photos["rocket"].resize((128, 128)), 1))
        first: dict = {}
        t = threading.Thread(target=lambda: first.update(result=post(srv.url + "/v1/check", image)))
        t.start()
        for _ in range(300):                       # bounded wait until the first check holds the only worker
            if (gate / "started").exists():
                break
            time.sleep(0.1)
        code, answer, headers = post(srv.url + "/v1/check", image)
        assert code == 503 and headers.get("retry-after") == "1" and "busy" in answer["error"]
        srv.proc.send_signal(signal.SIGTERM)       # stop while the first check is in flight
        time.sleep(0.5)
        (gate / "open").touch()
        t.join(timeout=60)
        assert first["result"][0] == 200 and first["result"][1]["verdict"] == "whole"
        assert srv.proc.wait(timeout=40) == 0
    finally:
        (gate / "open").touch()
        srv.stop()


def test_schemathesis_finds_no_server_error(licensed, tmp_path):
    st = Path(shutil.which("st") or EXE.parent / "st")
    with Server(licensed["ix"], "--max-bytes", 2_000_000) as srv:
        p = subprocess.run([str(st), "run", srv.url + "/openapi.json", "--checks", "not_a_server_error",
                            "--max-examples", "25", "--request-timeout", "30", "--generation-deterministic"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
