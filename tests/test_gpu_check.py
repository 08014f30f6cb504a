"""scripts/gpu_check.py runs every path it measures on a GPU, at toy sizes, and checks its answers."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_small_mode_runs_each_check_and_its_answers_agree(tmp_path):
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--small", "--json", str(out)], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(out.read_text())
    assert got["small"] is True
    checks = {c["what"]: c for c in got["checks"]}
    assert list(checks) == ["generation", "embedding", "search", "cliques"]
    gen = checks["generation"]
    assert gen["images"] == 4 and gen["images_per_s"] > 0 and 0 < gen["unet_share"] <= 1
    assert checks["embedding"]["images"] == 16 and checks["embedding"]["dimension"] == 32
    assert checks["search"]["top1_agrees_with_numpy"] == 1.0
    assert checks["cliques"]["where"].startswith("torch") and checks["cliques"]["max_difference_vs_numpy"] < 1e-4
    assert "UNet" in p.stdout and "of wall time" in p.stdout
