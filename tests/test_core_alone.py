"""The serving core and the client install alone: a fresh virtual environment holding only ./core, ./client and
their dependencies (numpy, Pillow, safetensors, tritonclient; no torch, no onnxruntime, none of
training/ or export/) runs the Triton scoring model's own code on LIVEC photographs and gets
exactly the crops the training venv makes. Only `triton_python_backend_utils`, which the Triton
stub injects at run time, is stood in for (tests/pb_utils_standin.py)."""
import hashlib
import json
import subprocess
import sys

import pytest

from conftest import BUNDLE, REPO
from export.triton_repo import IDENTITY_FILE, score_params
from qfm_core import io_names
from qfm_core.crop_plan import read_plan
from qfm_core.image_guard import Limits, decode_untrusted

PHOTOS = ["100.png", "1001.JPG", "1003.JPG", "105.png"]

CHILD = r'''
import hashlib, importlib.util, json, sys
from pathlib import Path

for forbidden in ("torch", "onnxruntime", "training", "export", "timm"):
    assert importlib.util.find_spec(forbidden) is None, f"{forbidden} is importable in the core-only venv"

job = json.loads(Path(sys.argv[1]).read_text())
sys.path.insert(0, job["tests"])
import pb_utils_standin as pb   # the project's one stand-in for the stub-injected module (pure Python)
model = pb.load(Path(job["model_dir"]), job["model_name"], job["config"])
out = {}
for path in job["photos"]:
    crops = model._crops(Path(path).read_bytes())
    out[Path(path).name] = [list(crops.shape), str(crops.dtype), hashlib.sha256(crops.tobytes()).hexdigest()]
try:
    model._crops(b"GIF89a truncated")
    out["rejected"] = None
except Exception as e:
    out["rejected"] = str(e)

import qfm_client
from qfm_client import AsyncQFMClient, QFMClient, protocol
from qfm_core import io_names
assert protocol.MODEL == io_names.ENSEMBLE and protocol.INPUT == io_names.IMAGE
out["client"] = [QFMClient.__name__, AsyncQFMClient.__name__]
print(json.dumps(out))
'''


@pytest.mark.slow
def test_core_alone_runs_the_scoring_model_on_livec(tmp_path, livec_dev):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "-c", str(REPO / "constraints.txt"),
                        str(REPO / "core"), str(REPO / "client")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

    model_dir = tmp_path / io_names.SCORE_MODEL
    model_dir.mkdir()
    (model_dir / "model.py").write_text((REPO / "triton_repo" / io_names.SCORE_MODEL / "1" / "model.py").read_text())
    plan = read_plan(BUNDLE / "config.json")
    (model_dir / IDENTITY_FILE).write_text(json.dumps({"crop_plan": plan.to_dict()}))
    config = {"parameters": {k: {"string_value": str(v)} for k, v in score_params("cpu-pip").items()},
              "output": [{"name": io_names.EMBEDDING, "dims": [-1, 384]}]}
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"model_dir": str(model_dir), "config": config, "tests": str(REPO / "tests"),
                               "model_name": io_names.SCORE_MODEL,
                               "photos": [str(livec_dev / "images" / p) for p in PHOTOS]}))
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    r = subprocess.run([str(py), str(child), str(job)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])

    for name in PHOTOS:   # the same crops as this (training) venv makes through the same plan
        crops = plan.crops(decode_untrusted((livec_dev / "images" / name).read_bytes(), Limits()))
        want = crops.transpose(0, 3, 1, 2).copy()
        assert got[name] == [list(want.shape), "uint8", hashlib.sha256(want.tobytes()).hexdigest()], name
        assert want.shape[0] == plan.crops_per_image
    assert got["rejected"] and got["rejected"].startswith("CORRUPT")
    assert got["client"] == ["QFMClient", "AsyncQFMClient"] and (venv / "bin" / "qfm-score").exists()
