"""``Lambda``: a layer from a function of graphc tensors (Keras' ``keras.layers.Lambda``).

Saved as Keras 3 saves it: a Python ``lambda`` as its marshalled bytecode (``__lambda__``:
code, defaults, closure), a named function by module and name. Loading bytecode runs code
from the file, so, as in Keras, it is refused unless the loader passes ``safe_mode=False``
(``load_model(..., safe_mode=False)``); a named function comes from ``custom_objects``."""
from __future__ import annotations

import builtins
import codecs
import contextlib
import inspect
import json
import marshal
import types
from typing import Any

import numpy as np

from .base import Layer, _fmt

_SAFE_MODE = [True]  # load_model's safe_mode while it builds layers


@contextlib.contextmanager
def safe_mode_scope(safe_mode: bool):
    """Lambda.from_config's ``safe_mode`` for the layers built inside (Keras' SafeModeScope)."""
    _SAFE_MODE.append(bool(safe_mode))
    try:
        yield
    finally:
        _SAFE_MODE.pop()


def _function_config(fn, who: str) -> dict:
    """Keras' ``Lambda._serialize_function_to_config``."""
    if isinstance(fn, types.LambdaType) and fn.__name__ == "<lambda>":
        closure = tuple(c.cell_contents for c in fn.__closure__) if fn.__closure__ else None
        try:
            json.dumps([fn.__defaults__, closure])
        except TypeError:
            raise TypeError(f"{who}: the lambda captures or defaults to values that cannot be saved "
                            f"({closure!r}, defaults {fn.__defaults__!r}); only numbers, strings, lists and dicts "
                            "can: write a Layer subclass with get_config to save this model") from None
        return {"class_name": "__lambda__",
                "config": {"code": codecs.encode(marshal.dumps(fn.__code__), "base64").decode("ascii"),
                           "defaults": fn.__defaults__, "closure": closure}}
    name = getattr(fn, "__name__", None)
    if name is None:
        raise TypeError(f"{who}: the function {fn!r} has no name to save it by; write a Layer subclass with "
                        "get_config to save this model")
    return {"module": getattr(fn, "__module__", None), "class_name": "function", "config": name,
            "registered_name": name}


# the globals a loaded lambda runs with (Keras gives its own module's): graphc's namespaces
_LAMBDA_GLOBALS = None


def _lambda_globals() -> dict:
    global _LAMBDA_GLOBALS
    if _LAMBDA_GLOBALS is None:
        import graphc
        from .. import dsl
        _LAMBDA_GLOBALS = {"__builtins__": builtins, "np": np, "gc": graphc, "F": dsl}
    return _LAMBDA_GLOBALS


def _function_from_config(cfg, custom_objects, who: str):
    if isinstance(cfg, dict) and cfg.get("class_name") == "__lambda__":
        if _SAFE_MODE[-1]:
            raise ValueError(f"{who}: the file holds a Python lambda as bytecode; loading it runs code from the file, "
                             "so it is refused by default. If you trust the file, pass safe_mode=False to load_model")
        c = cfg["config"]
        code = marshal.loads(codecs.decode(c["code"].encode("ascii"), "base64"))
        closure = None
        if c.get("closure") is not None:
            closure = tuple(types.CellType(v) for v in c["closure"])
        defaults = tuple(c["defaults"]) if c.get("defaults") is not None else None
        return types.FunctionType(code, _lambda_globals(), code.co_name, defaults, closure)
    if isinstance(cfg, dict) and cfg.get("class_name") == "function":
        name = cfg.get("registered_name") or cfg.get("config")
        fn = (custom_objects or {}).get(name) or (custom_objects or {}).get(cfg.get("config"))
        if fn is None:
            raise ValueError(f"{who}: the function {cfg.get('module')}.{cfg.get('config')} is not known here; pass "
                             f"custom_objects={{{cfg.get('config')!r}: function}} to load_model")
        return fn
    if callable(cfg):
        return cfg
    raise ValueError(f"{who}: cannot read the function {cfg!r}")


class Lambda(Layer):
    """``Lambda(function, output_shape=None, arguments=None)``: ``function(inputs, **arguments)``
    as a layer without weights. The output shape is read from the function traced on a
    symbolic input; ``output_shape`` (per-sample, or a function of the full input shape
    returning the full output shape, as Keras takes it) is checked against it. A function
    with a ``training`` parameter receives the call's flag."""

    def __init__(self, function, output_shape=None, mask=None, arguments=None, name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if not callable(function):
            raise TypeError(f"Lambda(function=...): expected a callable, got {function!r}")
        if mask is not None:
            raise NotImplementedError("Lambda(mask=...) is not supported by graphc")
        if arguments is not None and not isinstance(arguments, dict):
            raise TypeError(f"Lambda(arguments=...): expected a dict of keyword arguments, got {arguments!r}")
        if output_shape is not None and not callable(output_shape):
            try:
                output_shape = tuple(output_shape)
            except TypeError:
                raise ValueError(f"Lambda(output_shape=...): expected a tuple (without the batch dim) or a function, "
                                 f"got {output_shape!r}") from None
        self.function, self.arguments, self.output_shape_arg = function, dict(arguments or {}), output_shape
        try:
            self._takes_training = "training" in inspect.signature(function).parameters
        except (TypeError, ValueError):  # builtins without a signature
            self._takes_training = False

    def call(self, inputs, training=None):
        kw = dict(self.arguments)
        if self._takes_training:
            kw["training"] = training
        return self.function(inputs, **kw)

    def compute_output_shape(self, input_shape):
        traced = self._traced_output_shape(input_shape)
        given = self.output_shape_arg
        if given is not None and not self._output_batchless:
            if callable(given):
                full = given([(None,) + tuple(s) for s in input_shape] if self.merge else (None,) + tuple(input_shape))
                given = tuple(full)[1:]
            given = tuple(given)
            if given != traced:
                raise ValueError(f"{self._label}: output_shape={_fmt(given)} but the function returns per-sample "
                                 f"outputs of shape {_fmt(traced)} (for inputs {_fmt(input_shape)})")
        return traced

    def get_config(self) -> dict:
        """Keras 3's Lambda config: the function as bytecode (a lambda) or by name."""
        cfg = super().get_config()
        cfg["function"] = _function_config(self.function, self._label)
        if self.output_shape_arg is not None:
            given = self.output_shape_arg
            cfg["output_shape"] = _function_config(given, self._label) if callable(given) else list(given)
        cfg["arguments"] = dict(self.arguments)
        return cfg

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Lambda":
        config = dict(config)
        who = f"Lambda {config.get('name')!r}"
        config["function"] = _function_from_config(config["function"], custom_objects, who)
        shape = config.get("output_shape")
        if isinstance(shape, dict):
            config["output_shape"] = _function_from_config(shape, custom_objects, who)
        return super().from_config(config)
