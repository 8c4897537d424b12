"""The deployment: the container's entrypoint run end to end with the pip-installed Triton server,
its engine cache, its GPU probing, the Dockerfile (hadolint), the compose file (the compose-spec
schema) and the Kubernetes manifests (kubernetes-validate's offline schemas).

What cannot run here, and is not pretended: the image itself (no Docker daemon, no nvcr.io), the
GPU branch's engine builds (no GPU, no TensorRT), a real cluster. The GPU branch is driven here
up to the first thing that needs TensorRT, with a stand-in nvidia-smi reporting a GPU.
"""
from __future__ import annotations

import importlib.metadata
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import BUNDLE, REPO, run_script
from qfm_core import io_names
from serving import engine_cache, host_probe
from serving.image_artifacts import ONNX_FP32
from serving.triton_server import LIBS_DIR, SERVER_DIR, free_port, install_server

DOCKERFILE = REPO / "serving" / "container" / "Dockerfile"
K8S = REPO / "serving" / "k8s"
COMPOSE = REPO / "serving" / "compose.yaml"
BIN = Path(sys.executable).parent


def _tool(name: str, *args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


# ----------------------------------------------------------------------------- the entrypoint

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, exported, bundled_bank):
    """The image's artifact folder, staged by the same command `make image-artifacts` runs."""
    build = tmp_path_factory.mktemp("image_build")
    for name in ("qfm_student_fp32.onnx", "qfm_student_fp16.onnx"):
        shutil.copyfile(exported / name, build / name)
    shutil.copyfile(bundled_bank, build / "bank.safetensors")
    out = tmp_path_factory.mktemp("image") / "artifacts"
    r = run_script("serving/image_artifacts.py", "--out", out, "--checkpoint", BUNDLE, "--build", build)
    assert r.returncode == 0, r.stderr
    return out


def _server_wrapper(folder: Path) -> Path:
    """`tritonserver` as this machine has it: the pip wheel's binary with its libraries and
    backends (what serving/triton_server.py runs), exec'd with the entrypoint's arguments."""
    binary = install_server()
    wrapper = folder / "tritonserver"
    wrapper.write_text(f"#!/bin/sh\nexport LD_LIBRARY_PATH={LIBS_DIR}:$LD_LIBRARY_PATH\n"
                       f'exec {binary} --backend-directory {SERVER_DIR / "backends"} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin"   # the venv for the Python stub; no nvidia-smi
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def _scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def test_entrypoint_serves_the_cpu_target_and_becomes_the_server(tmp_path, artifacts, livec_dev):
    """No GPU: the entrypoint writes the CPU repository, execs tritonserver (same PID), and the
    server scores the golden photographs exactly as the golden test's server does."""
    import golden
    from qfm_client import QFMClient

    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    cmd = [sys.executable, "-m", "serving.entrypoint", "--artifacts", artifacts, "--engine-cache", tmp_path / "cache",
           "--repo", tmp_path / "run" / "repo", "--cpu-target", "cpu-pip", "--server", _server_wrapper(tmp_path),
           "--grpc-port", ports["grpc"], "--http-port", ports["http"], "--metrics-port", ports["metrics"]]
    log = open(tmp_path / "entrypoint.log", "w")
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "entrypoint.log").read_text()[-3000:]
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, (tmp_path / "entrypoint.log").read_text()[-3000:]
            time.sleep(0.5)
        # exec, not a child: the server is the process the container runtime signals
        assert Path(f"/proc/{proc.pid}/exe").resolve().name == "tritonserver"
        deployment = json.loads((tmp_path / "run" / "repo.deployment.json").read_text())
        assert deployment["target"] == "cpu-pip" and deployment["engines"] == {"student": None, "match": None}
        assert not (tmp_path / "run" / "repo.partial").exists()

        expected = golden.read()
        items = [i for i in golden.ITEMS if i.startswith("livec:")]
        paths = [livec_dev / i.split(":", 1)[1] for i in items]
        with QFMClient(f"127.0.0.1:{ports['grpc']}") as client:
            results = client.score(paths)
        for item, res in zip(items, results):
            assert res.ok, res.error
            assert abs(res.score - expected[item]["served"]) <= golden.TOLERANCE["served"], (item, res.score)
        # what the dashboard and the HPA's adapter rule read is published by this server
        metrics = _scrape(ports["metrics"])
        adapter = yaml.safe_load(yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["data"]["config.yaml"])
        for name in re.findall(r"\b(nv_[a-z_]+)\{", adapter["rules"][0]["metricsQuery"]):
            assert re.search(rf'^{name}{{[^}}]*model="{io_names.STUDENT_MODEL}"', metrics, re.M), name
        assert "qfm_served_score_count" in metrics
        assert 'quantile="0.5"' in metrics            # --metrics-config summary_latencies=true took effect

        proc.send_signal(signal.SIGTERM)              # `docker stop`, pod deletion
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_gpu_target_asked_for_without_a_gpu_is_refused(tmp_path, artifacts):
    r = subprocess.run([sys.executable, "-m", "serving.entrypoint", "--artifacts", str(artifacts), "--repo",
                        str(tmp_path / "repo"), "--prepare-only"], cwd=REPO, env=_env(QFM_TARGET="gpu-ngc"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and "nvidia-smi sees no GPU" in r.stdout and "--gpus" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "repo").exists()


def test_entrypoint_refuses_missing_artifacts_in_one_line(tmp_path, artifacts):
    partial = tmp_path / "artifacts"
    shutil.copytree(artifacts, partial)
    (partial / ONNX_FP32).unlink()
    r = subprocess.run([sys.executable, "-m", "serving.entrypoint", "--artifacts", str(partial), "--repo",
                        str(tmp_path / "repo"), "--cpu-target", "cpu-ngc", "--prepare-only"],
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "artifacts missing" in r.stdout and ONNX_FP32 in r.stdout and "make image-artifacts" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_entrypoint_writes_the_cpu_ngc_repository_of_the_image(tmp_path, artifacts):
    """Without a GPU the image serves cpu-ngc (native onnxruntime backend): the repository is the
    generator's own, and the server command binds where it is told and loads every model."""
    r = subprocess.run([sys.executable, "-m", "serving.entrypoint", "--artifacts", str(artifacts), "--repo",
                        str(tmp_path / "repo"), "--prepare-only", "--", "--log-verbose", "1"],
                       cwd=REPO, env=_env(QFM_BIND_ADDRESS="0.0.0.0", QFM_GRPC_PORT="9001"),   # as the image sets them
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no GPU visible: serving cpu-ngc" in r.stdout
    command = r.stdout.strip().splitlines()[-1].split()
    assert command[0] == "tritonserver" and command[-2:] == ["--log-verbose", "1"]
    assert command[command.index("--grpc-address") + 1] == "0.0.0.0" and command[command.index("--grpc-port") + 1] == "9001"
    assert {f"--load-model={m}" for m in io_names.MODELS} <= set(command)
    student = (tmp_path / "repo" / io_names.STUDENT_MODEL / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in student
    assert (tmp_path / "repo" / io_names.STUDENT_MODEL / "1" / "model.onnx").exists()


# ------------------------------------------------------------------- GPU probing and the cache

def _fake_smi(folder: Path, lines: list[str], rc: int = 0) -> Path:
    """Stand-in for the driver's nvidia-smi (a compiled tool of a GPU host): prints what a host
    with these GPUs prints for the entrypoint's query."""
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    body = "\n".join(lines)
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{body}\nEOF\nexit {rc}\n")
    smi.chmod(0o755)
    return smi


def test_gpu_probe_reads_nvidia_smi(tmp_path):
    assert host_probe.gpus(str(tmp_path / "absent")) == []
    smi = _fake_smi(tmp_path / "a", ["0, NVIDIA H200, 9.0, 580.95.05", "1, NVIDIA H200, 9.0, 580.95.05"])
    found = host_probe.gpus(str(smi))
    assert [g.index for g in found] == [0, 1] and host_probe.one_gpu_model(found).compute_capability == "9.0"
    assert host_probe.gpus(str(_fake_smi(tmp_path / "b", ["No devices were found"], rc=6))) == []
    mixed = host_probe.gpus(str(_fake_smi(tmp_path / "c", ["0, NVIDIA H200, 9.0, 580.95.05",
                                                            "1, NVIDIA L4, 8.9, 580.95.05"])))
    with pytest.raises(host_probe.HostError, match="different models"):
        host_probe.one_gpu_model(mixed)


def test_tensorrt_runtime_version_comes_from_the_library_file(tmp_path):
    real = tmp_path / "libnvinfer.so.10.13.3"
    real.write_bytes(b"")
    (tmp_path / "libnvinfer.so.10").symlink_to(real.name)
    assert host_probe.tensorrt_runtime_version([tmp_path]) == "10.13.3"
    assert host_probe.tensorrt_runtime_version([tmp_path / "none"]) is None
    assert host_probe.same_release("10.13.3.9", "10.13.3") and not host_probe.same_release("10.14.1.48", "10.13.3")


def test_gpu_host_without_tensorrt_stops_before_building(tmp_path, artifacts):
    """A GPU is visible but this host has no TensorRT runtime (as here): the entrypoint says so in
    one line and exits 3; it neither builds nor falls back to the CPU behind the user's back."""
    _fake_smi(tmp_path / "bin", ["0, NVIDIA H200, 9.0, 580.95.05"])
    env = _env(PATH=f"{tmp_path / 'bin'}{os.pathsep}{BIN}{os.pathsep}/usr/bin{os.pathsep}/bin")
    r = subprocess.run([sys.executable, "-m", "serving.entrypoint", "--artifacts", str(artifacts), "--engine-cache",
                        str(tmp_path / "cache"), "--repo", str(tmp_path / "repo"), "--prepare-only"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "1 GPU(s): NVIDIA H200, compute capability 9.0" in r.stdout
    assert "no libnvinfer.so" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "repo").exists() and not list((tmp_path / "cache").glob("*"))


KEY = {"gpu_name": "NVIDIA H200", "compute_capability": "9.0", "tensorrt": "10.13.3.9", "engine": "student",
       "onnx_sha256": "ab" * 32, "profile": [1, 72, 128]}


def _build_into(log: Path):
    def build(work: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)                         # long enough for a second process to arrive
        (work / "model.plan").write_bytes(b"plan for " + json.dumps(KEY).encode())
    return build


def _cached_in_process(cache: str, log: str, out: str) -> None:
    folder, built = engine_cache.cached_engines(Path(cache), KEY, _build_into(Path(log)), log=lambda m: None)
    Path(out).write_text(json.dumps([str(folder), built]))


def test_engine_cache_builds_once_per_key(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    folder, built = engine_cache.cached_engines(cache, KEY, _build_into(log), log=lambda m: None)
    assert built and folder.name.startswith("nvidia-h200-sm90-trt10.13.3.9-") and (folder / "model.plan").exists()
    assert json.loads((folder / engine_cache.KEY_FILE).read_text())["onnx_sha256"] == KEY["onnx_sha256"]
    again, built = engine_cache.cached_engines(cache, KEY, _build_into(log), log=lambda m: None)
    assert again == folder and not built and len(log.read_text().split()) == 1      # second start: reused
    for change in ({"tensorrt": "10.14.1.48"}, {"onnx_sha256": "cd" * 32}, {"compute_capability": "8.9"}):
        other, built = engine_cache.cached_engines(cache, {**KEY, **change}, _build_into(log), log=lambda m: None)
        assert built and other != folder
    assert len(log.read_text().split()) == 4 and (folder / "model.plan").exists()   # old engines kept
    timing = {engine_cache.timing_cache(cache, {**KEY, **c}).name for c in ({}, {"onnx_sha256": "cd" * 32},
                                                                          {"tensorrt": "10.14.1.48"})}
    assert timing == {"timing-nvidia-h200-sm90-trt10.13.3.9.cache", "timing-nvidia-h200-sm90-trt10.14.1.48.cache"}


def test_engine_cache_never_keeps_a_failed_or_damaged_build(tmp_path):
    cache = tmp_path / "cache"

    def failing(work: Path) -> None:
        (work / "model.plan").write_bytes(b"half")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        engine_cache.cached_engines(cache, KEY, failing, log=lambda m: None)
    assert [p.name for p in cache.iterdir()] == [".lock"]                # nothing half-built in place
    folder, built = engine_cache.cached_engines(cache, KEY, _build_into(tmp_path / "log"), log=lambda m: None)
    (folder / engine_cache.KEY_FILE).unlink()                              # damaged: key.json lost
    again, built = engine_cache.cached_engines(cache, KEY, _build_into(tmp_path / "log"), log=lambda m: None)
    assert built and again == folder and (again / engine_cache.KEY_FILE).exists()


def test_replicas_sharing_a_cache_build_once(tmp_path):
    """Two processes start together on one cache volume (two replicas on a node): one builds, the
    other waits on the lock and reuses."""
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_cached_in_process, args=(str(cache), str(log), str(tmp_path / f"out{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [json.loads((tmp_path / f"out{i}").read_text()) for i in range(2)]
    assert len(log.read_text().split()) == 1
    assert results[0][0] == results[1][0] and sorted(r[1] for r in results) == [False, True]


# ---------------------------------------------------------------------------- the image files

def test_dockerfile_passes_hadolint(tmp_path):
    r = _tool("hadolint", DOCKERFILE)
    assert r.returncode == 0, r.stdout + r.stderr
    sloppy = tmp_path / "Dockerfile"                       # the linter does fail on what it should
    sloppy.write_text(DOCKERFILE.read_text() + "RUN apt-get update && apt-get install -y curl\nRUN pip install requests\n")
    r = _tool("hadolint", sloppy)
    assert r.returncode != 0 and "DL3008" in r.stdout and "DL3013" in r.stdout, r.stdout


def _dockerfile_copies() -> list[str]:
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            sources += line.split()[1:-1]
    return sources


def test_image_holds_what_the_entrypoint_imports(tmp_path):
    """Copy exactly what the Dockerfile COPYs into a bare folder, import the entrypoint and both
    engine builders from there with the project's own code hidden and torch blocked, and check
    that every third-party distribution they load is pinned in the image's requirements."""
    image = tmp_path / "opt_qfm"
    for src in _dockerfile_copies():
        if src.startswith("build/") or src.startswith("serving/container/requirements"):
            continue
        path = REPO / src
        dest = image / src
        if path.is_dir():
            shutil.copytree(path, dest, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    probe = f"""
import json, sys
repo = {str(REPO)!r}
venv = {str(Path(sys.prefix))!r}
sys.path = [p for p in sys.path if p.startswith(venv) or not (p.startswith(repo) or p in ('', '.'))]
sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
sys.path.insert(0, {str(image)!r})
sys.path.insert(1, {str(image / 'core')!r})
before = set(sys.modules)
for blocked in ('torch', 'timm', 'onnxruntime', 'scipy', 'tritonclient', 'yaml'):
    sys.modules[blocked] = None
import serving.entrypoint, export.build_engine, export.build_match_engine
import contextlib, io, runpy                       # the builders as the entrypoint runs them: scripts
for script in ('build_engine.py', 'build_match_engine.py'):
    sys.argv = [script, '--help']
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            runpy.run_path({str(image / 'export')!r} + '/' + script, run_name='__main__')
        except SystemExit as e:
            assert e.code == 0, (script, e.code)
ours = {{m: getattr(sys.modules[m], '__file__', None) for m in ('serving.entrypoint', 'export.triton_repo', 'qfm_core')}}
print(json.dumps({{'ours': ours, 'top': sorted({{m.split('.')[0] for m, v in sys.modules.items() if v is not None and m not in before}})}}))
"""
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout)
    assert all(str(f).startswith(str(image)) for f in seen["ours"].values()), seen["ours"]
    dists = importlib.metadata.packages_distributions()
    loaded = {d.lower().replace("_", "-") for m in seen["top"] for d in dists.get(m, [])}
    pinned = {re.split(r"[=<>\[]", ln)[0].strip().lower().replace("_", "-")
              for ln in (REPO / "serving" / "container" / "requirements.txt").read_text().splitlines()
              if ln.strip() and not ln.startswith("#")}
    ours = {"qfm-core", "qfm-iqm", "qfm-client"}
    assert loaded - ours <= pinned, f"imported but not installed in the image: {sorted(loaded - ours - pinned)}"


def test_compose_file_matches_the_compose_spec(tmp_path):
    r = _tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))   # a typo
    assert _tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", broken).returncode != 0
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"].values()
    gpus = [s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for s in services]
    assert len({tuple(g) for g in gpus}) == len(gpus)                              # one GPU each
    host_ports = [p.rsplit(":", 1)[0] for s in services for p in s["ports"]]
    assert len(set(host_ports)) == len(host_ports)
    cache = re.search(r"QFM_ENGINE_CACHE=(\S+)", DOCKERFILE.read_text()).group(1)
    assert all(any(v.endswith(":" + cache) for v in s["volumes"]) for s in services)


def _manifests() -> list[dict]:
    docs = []
    for name in yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def test_kubernetes_manifests_validate_offline(tmp_path):
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    r = _tool("kubernetes-validate", "--strict", *[K8S / n for n in listed])
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "deployment.yaml"
    broken.write_text((K8S / "deployment.yaml").read_text().replace("replicas: 2", "replicas: two"))
    assert _tool("kubernetes-validate", "--strict", broken).returncode != 0

    kinds = {d["kind"]: d for d in _manifests()}
    pod = kinds["Deployment"]["spec"]["template"]
    (triton,) = pod["spec"]["containers"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}                 # the entrypoint's defaults
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    labels = pod["metadata"]["labels"]
    services = [d for d in _manifests() if d["kind"] == "Service"]
    assert len(services) == 2 and all(s["spec"]["selector"].items() <= labels.items() for s in services)
    assert {p["targetPort"] for s in services for p in s["spec"]["ports"]} == set(ports)
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa_metric = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(kinds["ConfigMap"]["data"]["config.yaml"])["rules"]
    assert hpa_metric in [r["name"]["as"] for r in rules]
    mounts = {m["mountPath"] for m in triton["volumeMounts"]}
    assert re.search(r"QFM_ENGINE_CACHE=(\S+)", DOCKERFILE.read_text()).group(1) in mounts
