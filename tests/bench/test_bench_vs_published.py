"""bench/bench_vs_published.py: the medssl-only path (no published checkout) at a tiny size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_vs_published.py"


def test_medssl_variants_time_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--sizes", "16", "--features", "8", "16", "--variants", "published",
           "medssl", "medssl_bf16", "--reps", "1", "--steps", "1", "--threads", "1", "--json", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "skipping ['published']" in p.stdout  # no --published: the published variant is skipped
    assert "== 16^3" in p.stdout and "medssl_bf16" in p.stdout
    runs = json.loads(out.read_text())["runs"]
    assert sorted(r["variant"] for r in runs) == ["medssl", "medssl_bf16"]
    for r in runs:
        assert "error" not in r, r.get("error")
        assert math.isfinite(r["s_per_step"]) and r["s_per_step"] > 0
        assert r["peak_rss_GiB"] > 0 and r["params"] > 0 and math.isfinite(r["final_loss"])
