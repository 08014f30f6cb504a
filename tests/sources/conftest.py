"""The photographs behind a quiet HTTP server on 127.0.0.1, as LAION's URL tables point at images."""

from __future__ import annotations

import functools
import http.server
import threading

import pandas as pd
import pytest

from helpers import Quiet

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "china", "flower"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, photos):
    """The photographs as 96 px JPEG files behind http://127.0.0.1:PORT/, with a URL table
    (caption, LICENSE, similarity) that also names one missing file (a 404)."""
    root = tmp_path_factory.mktemp("i2d")
    www = root / "www"
    www.mkdir()
    for n in NAMES:
        photos[n].resize((96, 96)).save(www / f"{n}.jpg", quality=92)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    rows = [{"url": f"{base}/{n}.jpg", "caption": f"a photograph of {n}", "LICENSE": f"cc-by-{i}",
             "similarity": 0.3} for i, n in enumerate(NAMES)]
    rows.insert(3, {"url": f"{base}/missing.jpg", "caption": "gone", "LICENSE": "?", "similarity": 0.1})
    pd.DataFrame(rows).to_parquet(root / "urls.parquet")
    yield {"root": root, "www": www, "base": base, "rows": rows}
    httpd.shutdown()

