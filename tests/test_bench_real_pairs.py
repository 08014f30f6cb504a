"""scripts/bench_real_pairs.py on a local folder of pairs: each pair graded as a scan grades it; without a folder
it says so and exits 0 (real figure crops stay out of the repository)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

from imgextract.demo import composites as cp

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_real_pairs.py"


def test_pairs_are_graded_and_no_folder_is_a_message(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "no pairs folder given" in p.stdout
    logo, camera, page = (cp.square(cp.photo(n), 160) for n in ("logo", "camera", "page"))
    small = logo.resize((56, 56), Image.BICUBIC)          # a figure-sized, recompressed near-copy
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=20)
    Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((160, 160), Image.BICUBIC).save(tmp_path / "a.png")
    logo.save(tmp_path / "a_match.png")
    camera.save(tmp_path / "b.png")
    page.save(tmp_path / "b_match.png")
    (tmp_path / "pairs.csv").write_text("generation,match,label,source\na.png,a_match.png,replication,fig\n"
                                        "b.png,b_match.png,not memorized,fig\n../x.png,a_match.png,x,y\n")
    p = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--json", str(tmp_path / "out.json")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "line 4" in p.stderr and "outside" in p.stderr
    import json
    rows = {r["name"]: r for r in json.loads((tmp_path / "out.json").read_text())}
    assert rows["a"]["level"] in ("near-exact", "replication") and rows["b"]["level"] == "none"
    assert "replication: 1 pairs" in p.stdout and "not memorized: 1 pairs; none 1" in p.stdout
