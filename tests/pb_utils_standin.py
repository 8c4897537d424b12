"""The smallest stand-in for `triton_python_backend_utils`, the module Triton's Python-backend stub
injects into a model process (its classes are compiled into the stub). With it a test can hand
one model's execute() several requests at once, as the dynamic batcher does, which a client of a
real server cannot force. BLS requests are routed to other stood-in models (real model.py files
on real ONNX files), awaited the way the stub's async_exec is."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE = range(5)

    def __init__(self, msg, code=0):
        self._msg, self.code = msg, code

    def message(self):
        return self._msg


class Tensor:
    def __init__(self, name, array):
        self._name, self._array = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors=(), error=None):
        self.outputs, self._error = list(output_tensors), error

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


class MetricFamily:
    """Records what a model publishes (the real one feeds Triton's Prometheus endpoint)."""
    COUNTER, GAUGE, HISTOGRAM = range(3)

    def __init__(self, name, description, kind):
        self.name, self.kind, self.metrics = name, kind, []

    def Metric(self, labels, buckets=None):   # noqa: N802 (the stub's spelling)
        if (buckets is not None) != (self.kind == MetricFamily.HISTOGRAM):
            raise ValueError("buckets are for histograms only, and histograms need them")
        metric = types.SimpleNamespace(labels=labels, values=[])
        metric.increment = metric.observe = metric.values.append
        self.metrics.append(metric)
        return metric


class Request:
    def __init__(self, **tensors):
        self.inputs = [Tensor(k, v) for k, v in tensors.items()]


MODELS: dict = {}   # model name -> loaded TritonPythonModel, for BLS


class InferenceRequest:
    def __init__(self, model_name, requested_output_names, inputs):
        self.model_name, self.inputs = model_name, inputs

    async def _run(self):
        model = MODELS[self.model_name]
        request = Request(**{t.name(): t.as_numpy() for t in self.inputs})
        out = model.execute([request])
        return (await out if asyncio.iscoroutine(out) else out)[0]

    def async_exec(self):
        return self._run()


def get_input_tensor_by_name(request, name):
    return next((t for t in request.inputs if t.name() == name), None)


def get_output_tensor_by_name(response, name):
    return next((t for t in response.outputs if t.name() == name), None)


def get_output_config_by_name(config, name):
    return next(o for o in config["output"] if o["name"] == name)


def install() -> None:
    module = types.ModuleType("triton_python_backend_utils")
    for name in ("TritonError", "Tensor", "MetricFamily", "InferenceResponse", "InferenceRequest", "get_input_tensor_by_name",
                 "get_output_tensor_by_name", "get_output_config_by_name"):
        setattr(module, name, globals()[name])
    module.TritonModelException = RuntimeError
    sys.modules["triton_python_backend_utils"] = module


def load(model_dir: Path, name: str, config: dict):
    """TritonPythonModel of model_dir/model.py, initialised with `config` (Triton's JSON form)."""
    install()
    spec = importlib.util.spec_from_file_location(f"standin_{name}", model_dir / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_name": name})
    MODELS[name] = model
    return model


def execute(model, requests):
    out = model.execute(requests)
    return asyncio.run(out) if asyncio.iscoroutine(out) else out
