"""``cow demo`` runs end to end and writes every file of its run folder."""

import base64
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

COW = shutil.which("cow", path=str(Path(sys.executable).parent)) or "cow"


def test_demo_writes_the_full_run_folder(tmp_path):
    t0 = time.perf_counter()
    r = subprocess.run([COW, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and re.fullmatch(r"\d{8}T\d{6}Z-criticality", runs[0].name)
    run = runs[0]
    assert str(run.name) in r.stdout  # it says where the report is
    expected = {
        "config.json",
        "results.json",
        "report.md",
        "report.html",
        "kernel_vs_depth.png",
        "correlation_vs_depth.png",
        "kurtosis_vs_depth.png",
        "phase_relu.png",
        "phase_tanh.png",
        "phase_gelu.png",
    }
    assert expected <= {p.name for p in run.iterdir()}
    res = json.loads((run / "results.json").read_text())
    labels = [c["label"] for c in res["data"]["cases"]]
    assert any("ReLU critical" in s for s in labels) and any("tanh chaotic" in s for s in labels)
    html = (run / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) == 6 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    print(f"demo wall time {elapsed:.1f}s")
