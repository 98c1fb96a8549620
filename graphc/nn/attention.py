"""``keras.layers.MultiHeadAttention`` over graphc's batched GEMMs.

Keras 3's computation (keras/src/layers/attention/multi_head_attention.py), for
``query (B, Tq, dq)``, ``value (B, Tv, dv)`` and ``key (B, Tv, dk)`` (default: ``value``):

- projections (Keras' EinsumDense layers): ``Q = query @ query/kernel + query/bias`` with
  ``query/kernel`` of shape ``(dq, num_heads, key_dim)`` and ``query/bias`` ``(num_heads,
  key_dim)``; ``K`` likewise with ``key/kernel (dk, num_heads, key_dim)``; ``V`` with
  ``value/kernel (dv, num_heads, value_dim)``;
- scores ``softmax(Q / sqrt(key_dim) @ K^T)`` per head, over the keys; masked positions
  (``attention_mask`` 0, or above the diagonal with ``use_causal_mask``) get ``-1e9`` added
  before the softmax (Keras' large negative for float32);
- dropout (``rate=dropout``, training only) on the attention probabilities, drawn inside
  the compiled step by ``gc.dropout`` as the Dropout layer does;
- ``out = concat_heads(P @ V) @ attention_output/kernel + attention_output/bias`` with
  ``attention_output/kernel (num_heads, value_dim, output_dim)``, ``output_dim`` defaulting
  to ``dq``.

Each projection is ONE GEMM over all rows (``(B, T, d) @ (d, H*k)``); the per-head
products are batched GEMMs on ``(B, H, T, k)`` stacks with ``K^T`` read in place.
Glorot initializers compute their fans from the 3-D kernel shapes as Keras does.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .. import dsl as F
from . import regularizers as R
from .base import KerasTensor, Layer, _fmt, _initializer, _layer_seed, _serialize_initializer

__all__ = ["MultiHeadAttention"]

_LARGE_NEGATIVE = -1e9  # what Keras adds to masked float32 scores


def _pos_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise ValueError(f"MultiHeadAttention: {what} must be a positive int, got {v!r}")
    return int(v)


class MultiHeadAttention(Layer):
    """``keras.layers.MultiHeadAttention(num_heads, key_dim, ...)``, called as
    ``mha(query, value, key=None, attention_mask=None, use_causal_mask=False)`` on rank-3
    tensors ``(batch, time, features)``; self-attention is ``mha(x, x)``. Weights in Keras'
    order: query, key, value and attention_output kernels and biases. See the module
    docstring for the formulas."""

    merge = True  # takes several tensors (query, value[, key][, attention_mask])

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, dropout: float = 0.0,
                 use_bias: bool = True, output_shape=None, attention_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, seed: int | None = None,
                 name: str | None = None, **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.num_heads = _pos_int(num_heads, "num_heads")
        self.key_dim = _pos_int(key_dim, "key_dim")
        self.value_dim = self.key_dim if value_dim is None else _pos_int(value_dim, "value_dim")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be a float in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        if output_shape is not None:
            shape = (output_shape,) if isinstance(output_shape, numbers.Integral) else tuple(output_shape)
            if len(shape) != 1:
                raise NotImplementedError(f"MultiHeadAttention: output_shape={output_shape!r}: only a single "
                                          "output dim is supported")
            output_shape = _pos_int(shape[0], "output_shape")
        self._output_dim_arg = output_shape
        if attention_axes is not None and tuple(np.atleast_1d(attention_axes)) not in ((1,), (-2,)):
            raise NotImplementedError(f"MultiHeadAttention: attention_axes={attention_axes!r}: only attention over "
                                      "the time axis of (batch, time, features) inputs is supported")
        bad = sorted(k for k, v in (("activity_regularizer", activity_regularizer),
                                    ("kernel_constraint", kernel_constraint),
                                    ("bias_constraint", bias_constraint)) if v is not None)
        if bad:
            raise NotImplementedError(f"MultiHeadAttention: {', '.join(bad)} are not supported yet")
        self.kernel_initializer = _initializer(kernel_initializer, "MultiHeadAttention(kernel_initializer=...)")
        self.bias_initializer = _initializer(bias_initializer, "MultiHeadAttention(bias_initializer=...)")
        self.kernel_regularizer = R.get(kernel_regularizer, "MultiHeadAttention(kernel_regularizer=...)")
        self.bias_regularizer = R.get(bias_regularizer, "MultiHeadAttention(bias_regularizer=...)")
        self.seed = seed

    # ---- calling -------------------------------------------------------------------------------
    def __call__(self, query, value=None, key=None, attention_mask=None, use_causal_mask: bool = False,
                 training: bool = False, return_attention_scores: bool = False, query_mask=None, value_mask=None,
                 key_mask=None):
        if value is None:
            raise ValueError(f"{self._label}: call it as mha(query, value) (self-attention: mha(x, x))")
        if return_attention_scores:
            raise NotImplementedError(f"{self._label}: return_attention_scores=True is not supported yet")
        if query_mask is not None or value_mask is not None or key_mask is not None:
            raise NotImplementedError(f"{self._label}: query_mask/value_mask/key_mask are not supported; pass "
                                      "attention_mask (batch, target_len, source_len) instead")
        tensors = [query, value] + ([key] if key is not None else []) + (
            [attention_mask] if attention_mask is not None else [])
        kinds = {isinstance(t, KerasTensor) for t in tensors}
        if len(kinds) > 1:
            raise TypeError(f"{self._label}: query, value, key and attention_mask must all be symbolic tensors "
                            "(graphc.nn.Input or layer outputs) or all graphc tensors")
        for what, t in zip(("query", "value", "key"), (query, value, key)):
            if t is not None and len(t.shape) != 3:
                raise ValueError(f"{self._label}: {what} must have rank 3 (batch, time, features), got shape "
                                 f"{tuple(t.shape)}")
        tq, tv = query.shape[1], value.shape[1]
        if key is not None and key.shape[1] != tv:
            raise ValueError(f"{self._label}: key and value must have the same length; got key of shape "
                             f"{tuple(key.shape)} and value of shape {tuple(value.shape)}")
        if attention_mask is not None and tuple(attention_mask.shape[1:]) != (tq, tv):
            raise ValueError(f"{self._label}: attention_mask must have shape (batch, {tq}, {tv}) (batch, target "
                             f"length, source length), got {tuple(attention_mask.shape)}")
        kwargs = {"has_key": key is not None, "has_mask": attention_mask is not None,
                  "use_causal_mask": bool(use_causal_mask)}
        return self._apply(tensors, bool(training), kwargs)

    def _build_shapes(self, shapes, kwargs):
        """Built from [query, value, key] shapes (key defaults to value); the mask has no weights."""
        q, v = shapes[0], shapes[1]
        return [q, v, shapes[2] if kwargs.get("has_key") else v]

    # ---- weights -------------------------------------------------------------------------------
    def build(self, input_shape):
        (tq, dq), (tv, dv), (tk, dk) = (tuple(s) for s in input_shape)
        h, k, vd = self.num_heads, self.key_dim, self.value_dim
        self.output_dim = self._output_dim_arg or dq
        kr, br = self.kernel_regularizer, self.bias_regularizer
        self._proj = {}
        for part, d_in, d_out in (("query", dq, k), ("key", dk, k), ("value", dv, vd)):
            kernel = self.add_weight(f"{part}/kernel", (d_in, h, d_out), self.kernel_initializer, kr)
            bias = self.add_weight(f"{part}/bias", (h, d_out), self.bias_initializer, br) if self.use_bias else None
            self._proj[part] = (kernel, bias)
        self.output_kernel = self.add_weight("attention_output/kernel", (h, vd, self.output_dim),
                                             self.kernel_initializer, kr)
        self.output_bias = (self.add_weight("attention_output/bias", (self.output_dim,), self.bias_initializer, br)
                            if self.use_bias else None)
        self._shapes = (tq, tv)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.output_dim)

    def _project(self, x, part: str):
        """``(B, T, d) -> (B, heads, T, dim)``: one GEMM over all rows, then a head split."""
        kernel, bias = self._proj[part]
        d_in, h, d_out = kernel.shape
        y = F.reshape(x @ F.reshape(kernel, (d_in, h * d_out)), (None, x.shape[1], h, d_out))
        if bias is not None:
            y = y + bias
        return F.transpose(y, (0, 2, 1, 3))

    def call(self, xs, training=False, has_key=False, has_mask=False, use_causal_mask=False):
        xs = list(xs)
        query, value = xs[0], xs[1]
        key = xs[2] if has_key else value
        mask = xs[-1] if has_mask else None
        q = self._project(query, "query") * (1.0 / math.sqrt(self.key_dim))
        k = self._project(key, "key")
        v = self._project(value, "value")
        scores = q @ F.swapaxes(k, -1, -2)                        # (B, H, Tq, Tv)
        tq, tv = self._shapes
        if use_causal_mask:
            causal = F.const(np.tril(np.ones((tq, tv), np.float32)))
            mask = causal if mask is None else F.cast(mask, "float32") * causal
        if mask is not None:
            m = F.cast(mask, "float32")
            m = F.reshape(m, (None, 1, tq, tv)) if m.ndim == 3 else m
            scores = scores + (1.0 - m) * _LARGE_NEGATIVE
        probs = F.softmax(scores, axis=-1)
        if training and self.dropout > 0:
            probs = F.dropout(probs, self.dropout, seed=_layer_seed(self, self.seed))
        out = F.transpose(probs @ v, (0, 2, 1, 3))               # (B, Tq, H, value_dim)
        h, vd = self.num_heads, self.value_dim
        out = F.reshape(out, (None, tq, h * vd)) @ F.reshape(self.output_kernel, (h * vd, self.output_dim))
        if self.output_bias is not None:
            out = out + self.output_bias
        return out

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "value_dim": self.value_dim, "dropout": self.dropout, "use_bias": self.use_bias, "use_gate": False,
                "output_shape": self._output_dim_arg, "attention_axes": [1], "sliding_window": None,
                "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                "bias_initializer": _serialize_initializer(self.bias_initializer),
                "kernel_regularizer": R.serialize(self.kernel_regularizer,
                                                  "MultiHeadAttention(kernel_regularizer=...)"),
                "bias_regularizer": R.serialize(self.bias_regularizer, "MultiHeadAttention(bias_regularizer=...)"),
                "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None, "seed": self.seed}

    def _keras_weight_groups(self):
        """Keras builds the projections as EinsumDense sub-layers (h5 paths ``query_dense``, ...)."""
        name = self.name or self.default_name
        by_short = {n.name.split("/", 1)[1]: n for n in self.weights}
        groups = [("", name, [])]
        for sub, part in (("query_dense", "query"), ("key_dense", "key"), ("value_dense", "value"),
                          ("output_dense", "attention_output")):
            groups.append((sub, part, [by_short[f"{part}/{w}"] for w in ("kernel", "bias")
                                       if f"{part}/{w}" in by_short]))
        return groups + [("_dropout_layer", "dropout", []), ("_softmax", "softmax", [])]

    def _check_rank(self, input_shape) -> None:
        for s in input_shape:
            if len(s) != 2:
                raise ValueError(f"{self._label}: inputs must have rank 3 (batch, time, features), got "
                                 f"{_fmt(list(input_shape))}")
