"""Run the real Triton Inference Server on this machine, from the nvidia-pytriton wheel.

    python serving/triton_server.py --repo triton_repo            (what `make serve` runs)

The wheel ships `tritonserver` (2.51) with the Python backend and per-Python stubs. We download
the pinned wheel with pip (no install, so its numpy<2 pin cannot touch our venv), extract the
server into .cache/tritonserver, and start it bound to 127.0.0.1. The Python-backend stub embeds
the system's shared libpython3.X and imports packages from the virtual environment whose bin
is first on PATH, so models see exactly this project's pinned packages.
"""
from __future__ import annotations

import argparse
import ctypes.util
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from qfm_core import io_names
from training.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("QFM_TRITON_CACHE", REPO_ROOT / ".cache"))
SERVER_DIR = CACHE / "tritonserver"
LIBS_DIR = CACHE / "nvidia_pytriton.libs"
WHEEL = "nvidia-pytriton==0.7.0"
DEFAULT_MODELS = io_names.MODELS


class ServerError(RuntimeError):
    pass


def install_server() -> Path:
    """Extract tritonserver from the pinned wheel once; returns the binary's path. Under a lock:
    parallel test workers (or two `make serve`s) on a fresh checkout would otherwise both extract."""
    binary = SERVER_DIR / "bin" / "tritonserver"
    stub = SERVER_DIR / "backends" / "python" / "triton_python_backend_stub"
    if binary.exists() and stub.exists() and LIBS_DIR.is_dir():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stub.exists() and LIBS_DIR.is_dir():   # the other one installed it
            return binary
        return _extract_server(binary)


def _extract_server(binary: Path) -> Path:
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not ctypes.util.find_library(f"python{py}"):
        raise ServerError(f"the Python-backend stub needs the shared libpython{py}: apt-get install libpython{py}")
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if not list(wheels.glob("nvidia_pytriton-0.7.0-*.whl")):
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), WHEEL],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise ServerError(f"pip download {WHEEL} failed: {r.stderr.strip()[-500:]}")
    wheel = next(wheels.glob("nvidia_pytriton-0.7.0-*.whl"))
    tmp = CACHE / "tritonserver.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
                z.extract(member, tmp)
    for p in tmp.rglob("*"):  # zip extraction drops the executable bits
        if p.is_file() and (p.parent.name == "bin" or p.name == "triton_python_backend_stub" or ".so" in p.name):
            p.chmod(0o755)
    stub_src = tmp / "pytriton" / "tritonserver" / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub_src.exists():
        raise ServerError(f"{WHEEL} has no Python-backend stub for Python {py}")
    shutil.copy2(stub_src, tmp / "pytriton" / "tritonserver" / "backends" / "python" / stub_src.name)
    shutil.rmtree(SERVER_DIR, ignore_errors=True)
    shutil.rmtree(LIBS_DIR, ignore_errors=True)
    (tmp / "pytriton" / "tritonserver").rename(SERVER_DIR)
    (tmp / "nvidia_pytriton.libs").rename(LIBS_DIR)
    shutil.rmtree(tmp)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """A tritonserver process bound to localhost; use as a context manager."""

    def __init__(self, repo: Path, grpc_port: int = 0, http_port: int = 0, metrics_port: int = 0,
                 models: tuple = DEFAULT_MODELS, host: str = "127.0.0.1", log_path: Path | None = None):
        self.repo, self.models, self.host = Path(repo).resolve(), models, host
        self._asked = (grpc_port, http_port, metrics_port)
        self._pick_ports()
        self._log_path = log_path
        self.proc: subprocess.Popen | None = None

    def _pick_ports(self) -> None:
        """Ports asked for, or free ones. A free port can be taken by another process before the
        server binds it (parallel test workers): start() then picks again."""
        grpc, http, metrics = self._asked
        self.grpc_port, self.http_port, self.metrics_port = grpc or free_port(), http or free_port(), metrics or free_port()

    @property
    def log_path(self) -> Path:
        return self._log_path or (CACHE / f"tritonserver-{self.grpc_port}.log")

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def start(self, timeout: float = 180.0) -> "TritonServer":
        for attempt in range(3):
            try:
                return self._start(timeout)
            except ServerError:
                self._log.close()
                lost_port = "address already in use" in self.log_tail(200).lower()
                if not lost_port or attempt == 2 or all(self._asked):
                    raise
                self._pick_ports()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> "TritonServer":
        binary = install_server()
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # stub imports this venv
        env["LD_LIBRARY_PATH"] = f"{LIBS_DIR}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
        env.setdefault("OMP_NUM_THREADS", "1")  # Python-backend stubs must not oversubscribe the cores
        cmd = [str(binary), "--model-repository", str(self.repo),
               "--backend-directory", str(SERVER_DIR / "backends"),
               "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
               "--http-address", self.host, "--http-port", str(self.http_port),
               "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
               "--allow-gpu-metrics", "false", "--strict-readiness", "true", "--exit-on-error", "true",
               "--model-control-mode", "explicit", *[f"--load-model={m}" for m in self.models]]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.time() + timeout
        client = grpcclient.InferenceServerClient(self.grpc_url)
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.proc.returncode}; log tail:\n{self.log_tail()}")
            try:
                if client.is_server_ready() and all(client.is_model_ready(m) for m in self.models):
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # Triton unloads models and exits on SIGINT
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the server and its backend stubs at once (fault tests: a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._log.close()

    def _group(self):
        """(pid, /proc/pid) of the server and its backend stubs (its process group)."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:           # stat field 5: process group id
                    yield fields, stat.parent
            except (OSError, IndexError, ValueError):
                continue

    def cpu_seconds(self) -> dict:
        """CPU time (user + system) so far of tritonserver and of each Python-backend stub, by model
        name (read from the stub's command line, which holds its model.py path)."""
        tick = os.sysconf("SC_CLK_TCK")
        out: dict = {}
        for fields, proc_dir in self._group():
            secs = (int(fields[11]) + int(fields[12])) / tick      # utime, stime
            label = "tritonserver"
            try:
                args = (proc_dir / "cmdline").read_bytes().split(b"\0")
                model_py = next((a.decode() for a in args if a.endswith(b"model.py")), None)
                if model_py:
                    label = Path(model_py).parent.parent.name
                elif b"stub" in args[0]:
                    label = "stub"
            except OSError:
                pass
            out[label] = out.get(label, 0.0) + secs
        return out

    def rss_bytes(self) -> int:
        """Resident memory of the server and its Python-backend stubs (its process group)."""
        page = os.sysconf("SC_PAGE_SIZE")
        return sum(int(fields[21]) * page for fields, _ in self._group())   # stat field 24: rss in pages

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--repo", type=Path, default=REPO_ROOT / "triton_repo", help="model repository")
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--host", default="127.0.0.1", help="bind address (localhost unless you mean otherwise)")
    args = ap.parse_args(argv)
    server = TritonServer(args.repo, args.grpc_port, args.http_port, args.metrics_port, host=args.host)
    try:
        server.start()
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"Triton ready: gRPC {server.grpc_url}  HTTP {args.host}:{server.http_port}  "
          f"metrics http://{args.host}:{server.metrics_port}/metrics  models: {', '.join(server.models)}")
    print(f"log: {server.log_path}; Ctrl-C stops the server")
    try:
        while server.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0 if server.proc.returncode in (0, -2, None) else server.proc.returncode


if __name__ == "__main__":
    sys.exit(main())
