"""``Lambda``: a layer from a function of graphc tensors (Keras' ``keras.layers.Lambda``)."""
from __future__ import annotations

import inspect
from typing import Any

from .base import Layer, _fmt


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
        raise NotImplementedError(f"{self._label}: a Lambda layer's Python function has no portable config; "
                                  "write a Layer subclass with get_config to save this model")
