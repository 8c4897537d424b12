"""Run NVIDIA's real `tensorrt.plugin` package on a CPU: the smallest stand-in for the compiled
`tensorrt` module it imports, and the calls TensorRT's builder makes on a quickly-deployable
plugin, in TensorRT's order.

What is real: every line of `tensorrt.plugin` (registration-time validation, the plugin classes
that TensorRT drives, autotune combination expansion, symbolic shape expressions, launch-parameter
checks), read from the pinned `tensorrt-cu13-bindings` wheel (QFM_TRT_PLUGIN_DIR overrides the
folder, e.g. to try another release's sources). What is stood in: libnvinfer's objects (enums,
Dims, plugin field and tensor descriptors, the plugin registry, the dimension-expression builder,
here a small symbolic evaluator) and the builder's call sequence (`drive`). The stand-in supplies
values, it decides nothing: every check that could reject our plugin is NVIDIA's code or ours.
"""
from __future__ import annotations

import importlib.util
import operator
import os
import sys
import types
from pathlib import Path

import numpy as np


class _Value:
    """An enum member: compares by identity, prints its name."""

    def __init__(self, owner: str, name: str):
        self.name, self._repr = name, f"{owner}.{name}"

    def __repr__(self):
        return self._repr


class _AnyAttr(type):
    """Metaclass of the stand-in classes: any missing class attribute is an enum member."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Value(cls.__name__, name)
        setattr(cls, name, value)
        return value


def _stand_in_class(name: str) -> type:
    return _AnyAttr(name, (), {})


class Expr(metaclass=_AnyAttr):
    """IDimensionExpr: a constant, a named symbol or an operation, folded when constant."""

    OPS = {"SUM": operator.add, "SUB": operator.sub, "PROD": operator.mul, "FLOOR_DIV": operator.floordiv,
           "CEIL_DIV": lambda a, b: -(-a // b), "MAX": max, "MIN": min,
           "EQUAL": lambda a, b: int(a == b), "LESS": lambda a, b: int(a < b)}

    def __init__(self, value=None, symbol=None, op=None, args=()):
        self.value, self.symbol, self.op, self.args = value, symbol, op, args

    def is_constant(self) -> bool:
        return self.value is not None

    def get_constant_value(self) -> int:
        return self.value

    def evaluate(self, env: dict) -> int:
        if self.value is not None:
            return self.value
        if self.symbol is not None:
            return env[self.symbol]
        return self.OPS[self.op](*(a.evaluate(env) for a in self.args))


class ExprBuilder:
    """IExprBuilder."""

    def constant(self, value: int) -> Expr:
        return Expr(value=int(value))

    def operation(self, op: _Value, a: Expr, b: Expr) -> Expr:
        if a.is_constant() and b.is_constant():
            return Expr(value=Expr.OPS[op.name](a.value, b.value))
        return Expr(op=op.name, args=(a, b))


class Dims(list):
    MAX_DIMS = 8

    def __init__(self, shape=0):
        super().__init__([0] * shape if isinstance(shape, int) else list(shape))


class DimsExprs(list):
    def __init__(self, n: int):
        super().__init__([None] * n)


class PluginTensorDesc:
    def __init__(self, type=None, format=None, dims=(), scale=1.0):
        self.type, self.format, self.dims, self.scale = type, format, Dims(dims), scale


class DynamicPluginTensorDesc:
    def __init__(self, desc: PluginTensorDesc, min=(), opt=(), max=()):
        self.desc, self.min, self.opt, self.max = desc, Dims(min), Dims(opt), Dims(max)


class PluginField:
    """Like the bindings, keeps the data as a numpy array."""

    def __init__(self, name: str, data=None, type=None):
        self.name, self.type = name, type
        self.data = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data)


class Registry:
    def __init__(self):
        self.creators = {}

    def register_creator(self, creator, namespace: str) -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str):
        return self.creators.get((name, version, namespace))


class Logger(metaclass=_AnyAttr):
    def __init__(self, *args):
        pass

    def log(self, severity, message: str) -> None:
        pass


def make_tensorrt(version: str = "11.4.0.106") -> types.ModuleType:
    """A `tensorrt` module whose missing attributes are stand-in classes (created on first use)."""
    trt = types.ModuleType("tensorrt")
    trt.__path__ = []   # a package, so `tensorrt.plugin` can live under it
    classes: dict[str, type] = {}

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in classes:
            classes[name] = _stand_in_class(name)
        return classes[name]

    trt.__getattr__ = __getattr__
    trt.__version__ = version
    registry = Registry()
    trt.get_plugin_registry = lambda: registry
    for cls in (Dims, DimsExprs, PluginTensorDesc, DynamicPluginTensorDesc, PluginField, Logger):
        setattr(trt, cls.__name__, cls)
    trt.IDimensionExpr = Expr
    trt.PluginFieldCollection = list
    data_type = __getattr__("DataType")
    trt.float32, trt.float16, trt.int32, trt.int64 = (data_type.FLOAT, data_type.HALF, data_type.INT32,
                                                      data_type.INT64)
    return trt


def plugin_sources() -> Path:
    """The folder of tensorrt.plugin's sources: the installed bindings wheel's `plugin/`."""
    if os.environ.get("QFM_TRT_PLUGIN_DIR"):
        return Path(os.environ["QFM_TRT_PLUGIN_DIR"])
    spec = importlib.util.find_spec("tensorrt_bindings")   # finding does not import its libnvinfer
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("tensorrt_bindings not installed: pip install tensorrt-cu13-bindings (requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "plugin"


def install(version: str = "11.4.0.106"):
    """Put the stand-in `tensorrt` and the real `tensorrt.plugin` into sys.modules; returns both.
    Call uninstall() afterwards."""
    uninstall()
    trt = make_tensorrt(version)
    sys.modules["tensorrt"] = trt
    src = plugin_sources()
    spec = importlib.util.spec_from_file_location("tensorrt.plugin", src / "__init__.py",
                                                  submodule_search_locations=[str(src)])
    trtp = importlib.util.module_from_spec(spec)
    sys.modules["tensorrt.plugin"] = trtp
    trt.plugin = trtp
    spec.loader.exec_module(trtp)
    return trt, trtp


def uninstall() -> None:
    for name in [n for n in sys.modules if n == "tensorrt" or n.startswith("tensorrt.")]:
        del sys.modules[name]


def drive(trt, plugin_call, input_types: list, input_dims: list[list[Expr]], env: dict) -> dict:
    """Build-time calls TensorRT makes on an AOT plugin, in its order: create (STRICT_AOT), output
    types, output shapes, format combinations, then for each combination configure and for each
    valid tactic set_tactic, get_launch_params and get_kernel. Symbolic results are evaluated
    with `env` (e.g. {"N": 300}). Returns what TensorRT would have received."""
    _, _, plugin = plugin_call(trt.QuickPluginCreationRequest.STRICT_AOT)
    builder = ExprBuilder()
    n_in = len(input_types)
    out_types = plugin.get_output_data_types(list(input_types), [len(d) for d in input_dims])
    out_exprs = plugin.get_output_shapes([list(d) for d in input_dims], [], builder)
    shapes = [[e.evaluate(env) for e in d] for d in list(input_dims) + list(out_exprs)]
    types_now = list(input_types) + list(out_types)
    in_out = [DynamicPluginTensorDesc(PluginTensorDesc(t, trt.TensorFormat.LINEAR, s), s, s, s)
              for t, s in zip(types_now, shapes)]
    flat = plugin.get_supported_format_combinations(in_out, n_in)
    n_io = len(in_out)
    combos = [flat[i:i + n_io] for i in range(0, len(flat), n_io)]
    result = {"output_types": out_types, "output_shapes": shapes[n_in:], "combinations": [], "launches": []}
    for combo in combos:
        descs = [DynamicPluginTensorDesc(PluginTensorDesc(c.type, c.format, s), s, s, s) for c, s in zip(combo, shapes)]
        plugin.configure_plugin(descs[:n_in], descs[n_in:])
        tactics = plugin.get_valid_tactics()
        result["combinations"].append({"types": [c.type for c in combo], "formats": [c.format for c in combo],
                                       "tactics": sorted(tactics)})
        for tactic in tactics or [0]:   # no custom tactics: TensorRT's default tactic 0
            plugin.set_tactic(tactic)
            launch, setter = types.SimpleNamespace(), _SymSetter()
            plugin.get_launch_params([list(d) for d in input_dims], descs, n_in, launch, setter, builder)
            name, ptx = plugin.get_kernel([d.desc for d in descs[:n_in]], [d.desc for d in descs[n_in:]])
            grid = tuple(getattr(launch, f"grid_{a}").expr.evaluate(env) for a in "xyz")
            block = tuple(getattr(launch, f"block_{a}").expr.evaluate(env) for a in "xyz")
            result["launches"].append({
                "tactic": tactic, "kernel": name, "ptx": ptx, "grid": grid, "block": block,
                "shared_mem": launch.shared_mem.expr.evaluate(env),
                "scalars": [(s.dtype, s.expr.evaluate(env)) for s in setter.items[:setter.nbSymExprs]]})
    return result


class _SymSetter:
    """The symExprSetter TensorRT passes: holds the extra kernel arguments."""

    def __init__(self):
        self.nbSymExprs, self.items = 0, [None] * 16

    def __setitem__(self, i, value):
        self.items[i] = value
