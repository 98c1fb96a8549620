"""Recurrent layers (``keras.layers.SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``) on
``gc.scan``, with Keras 3's arguments, defaults, weight names and layouts and formulas
(keras/src/layers/rnn/): weights ``<layer>/<cell>/kernel`` ``(features, gates*units)``,
``recurrent_kernel`` ``(units, gates*units)`` and ``bias``, gates in Keras' order (LSTM: i, f,
c, o; GRU: z, r, h), so Keras weights load as they are.

The input projection of every time step is hoisted out of the loop: ``x @ kernel (+ bias)``
over ``(batch, time, features)`` is ONE GEMM over ``batch*time`` rows; the scan body keeps
only ``h @ recurrent_kernel`` and the gate arithmetic. Gradients come from the scan's adjoint.

Masking as Keras does it (``Embedding(mask_zero=True)``, ``Masking``): at a masked step the
state is carried through unchanged and, with ``return_sequences``, the step outputs the
carried output (zeros under ``Bidirectional``, which sets Keras' ``zero_output_for_mask``).

``dropout`` / ``recurrent_dropout`` as Keras 3's DropoutRNNCell: in training, inverted-dropout
masks (scaled by ``1/(1-rate)``) on the step's input ``(batch, features)`` and on ``h_{t-1}``
``(batch, units)``, drawn ONCE per call by the in-step generator (new masks each training
step, as ``Dropout``) and reused at every time step; none at inference. The input mask
multiplies x before the hoisted projection (a ``(batch, 1, features)`` mask broadcast over
time); the recurrent one is captured by the scan body. LSTM and GRU with
``recurrent_dropout > 0`` follow Keras' implementation 1: one mask of each kind per gate.
"""
from __future__ import annotations

import numbers
import zlib
from typing import Any

import numpy as np

from .. import dsl as F
from . import activations
from . import regularizers as R
from .base import Layer, _config_kwargs, _layer_seed, _serialize_initializer, _weight_args

__all__ = ["SimpleRNN", "LSTM", "GRU", "Bidirectional"]


def _unsupported(what: str, **given: Any) -> None:
    bad = sorted(k for k, v in given.items() if v is not None)
    if bad:
        raise NotImplementedError(f"{what}: {', '.join(bad)} are not supported yet")


def _rate(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{what}: expected a float in [0, 1), got {v!r}")
    return float(v)


class _RNN(Layer):
    """The loop shared by SimpleRNN, LSTM and GRU. A subclass sets ``_cell`` (Keras' cell
    name, the weights' middle name), ``_gates`` and ``_n_states`` and implements
    ``_bias_init`` and ``_step(h_and_states, xp_t) -> (new states, output)``."""

    ndim = 3
    supports_masking = True
    _cell = ""
    _gates = 1
    _n_states = 1

    def _setup(self, kwargs, *, units, activation, use_bias, kernel_initializer, recurrent_initializer,
               bias_initializer, kernel_regularizer, recurrent_regularizer, bias_regularizer, activity_regularizer,
               kernel_constraint, recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed,
               return_sequences, return_state, go_backwards, stateful, unroll, name, recurrent_activation=None,
               **own) -> None:
        """The constructor arguments all the recurrent layers share, from ``self._config`` (their
        named arguments); ``own`` are the ones a layer adds (``unit_forget_bias``...), set by it."""
        kwargs.pop("use_cudnn", None)  # graphc has its own kernels; Keras' switch changes nothing here
        kwargs.pop("zero_output_for_mask", None)
        what = type(self).__name__
        super().__init__(name=name, **kwargs)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
            raise ValueError(f"{what}: units must be a positive int, got {units!r}")
        _unsupported(what, activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                     recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint)
        if stateful:
            raise NotImplementedError(f"{what}(stateful=True): states kept across batches are not supported; "
                                      "graphc's compiled steps start every batch from zero states")
        self.dropout = _rate(dropout, f"{what}(dropout=...)")
        self.recurrent_dropout = _rate(recurrent_dropout, f"{what}(recurrent_dropout=...)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"{what}: seed must be an int or None, got {seed!r}")
        self.units = int(units)
        self.activation_name, self.activation = activations.get(activation)
        if recurrent_activation is not None:
            self.recurrent_activation_name, self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        _weight_args(self, what, kernel=(kernel_initializer, kernel_regularizer),
                     recurrent=(recurrent_initializer, recurrent_regularizer), bias=(bias_initializer, bias_regularizer))
        self.seed = seed
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards, self.stateful, self.unroll = bool(go_backwards), False, bool(unroll)
        self.zero_output_for_mask = False  # Bidirectional sets it to return_sequences, as Keras does
        self.kernel = self.recurrent_kernel = self.bias = None

    # ---- Keras config ---------------------------------------------------------------------
    def get_config(self):
        what = type(self).__name__
        cfg = {**super().get_config(), "return_sequences": self.return_sequences, "return_state": self.return_state,
               "go_backwards": self.go_backwards, "stateful": False, "unroll": self.unroll,
               "zero_output_for_mask": self.zero_output_for_mask, "units": self.units,
               "activation": self.activation_name}
        if hasattr(self, "recurrent_activation_name"):
            cfg["recurrent_activation"] = self.recurrent_activation_name
        cfg.update({"use_bias": self.use_bias, "kernel_initializer": _serialize_initializer(self.kernel_initializer),
                    "recurrent_initializer": _serialize_initializer(self.recurrent_initializer),
                    "bias_initializer": _serialize_initializer(self.bias_initializer)})
        if hasattr(self, "unit_forget_bias"):
            cfg["unit_forget_bias"] = self.unit_forget_bias
        for r in ("kernel", "recurrent", "bias"):
            cfg[f"{r}_regularizer"] = R.serialize(getattr(self, f"{r}_regularizer"), f"{what}({r}_regularizer=...)")
        cfg.update({"activity_regularizer": None, "kernel_constraint": None, "recurrent_constraint": None,
                    "bias_constraint": None, "dropout": self.dropout,
                    "recurrent_dropout": self.recurrent_dropout})
        if not isinstance(self, SimpleRNN):  # Keras' SimpleRNN config has no seed
            cfg["seed"] = self.seed
        if hasattr(self, "reset_after"):
            cfg["reset_after"] = self.reset_after
        return cfg

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        zero_output = bool(config.pop("zero_output_for_mask", False))  # Bidirectional's setting, restored by it
        layer = cls(**_config_kwargs(cls, config))
        layer.zero_output_for_mask = zero_output
        return layer

    def _keras_weight_groups(self):
        """Keras keeps a recurrent layer's weights in its cell: ``<layer>/cell/vars``."""
        return [("", self.name or self.default_name, []), ("cell", self._cell, self.weights)]

    # ---- weights --------------------------------------------------------------------------
    def build(self, input_shape):
        self._declare(self.add_weight, f"{self._cell}/", input_shape)

    def _declare(self, add, prefix: str, input_shape) -> None:
        """Declare the weights through ``add`` (this layer's add_weight, or a Bidirectional's)."""
        n = self._gates * self.units
        self.kernel = add(prefix + "kernel", (input_shape[-1], n), self.kernel_initializer, self.kernel_regularizer)
        self.recurrent_kernel = add(prefix + "recurrent_kernel", (self.units, n), self.recurrent_initializer,
                                    self.recurrent_regularizer)
        self.bias = (add(prefix + "bias", self._bias_shape(), self._bias_init(), self.bias_regularizer)
                     if self.use_bias else None)

    def _bias_shape(self) -> tuple:
        return (self._gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    # ---- shapes ---------------------------------------------------------------------------
    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def _extra_output_shapes(self):
        return [(self.units,)] * self._n_states if self.return_state else []

    def compute_mask(self, x, mask):
        return mask if self.return_sequences else None

    # ---- the loop -------------------------------------------------------------------------
    def _input_projection(self, x):
        """``x @ kernel (+ input bias)`` for all steps at once: (time, batch, gates*units)."""
        xp = x @ self.kernel  # (T, B, F) @ (F, n): one GEMM over T*B rows
        b = self._input_bias()
        return xp + b if b is not None else xp

    def _input_bias(self):
        return self.bias

    def call(self, x, training=False, mask=None):
        return self._run(x, training, mask, self.zero_output_for_mask)

    def _dropout_masks(self, x, training):
        """Keras' DropoutRNNCell: ``(input masks, recurrent masks)``, each None or a list of
        ``(batch, features)`` / ``(batch, units)`` inverted-dropout masks drawn once per call and
        applied at every step. LSTM and GRU with ``recurrent_dropout > 0`` run Keras'
        implementation 1, which draws one mask of each kind per gate; otherwise one mask is
        shared by all gates. Each mask has its own seed (the first one is the layer's seed)."""
        if not training:
            return None, None
        n = self._gates if self.recurrent_dropout > 0.0 else 1
        base = _layer_seed(self, self.seed)

        def draw(like, rate, first):
            return [F.dropout(F.ones_like(like), rate, seed=base if first + k == 0 else
                              zlib.crc32(f"{base}:{first + k}".encode())) for k in range(n)]
        dp = draw(x[:, 0, :], self.dropout, 0) if self.dropout > 0.0 else None
        rdp = None
        if self.recurrent_dropout > 0.0:
            rdp = draw(F.ones_like(x[:, 0, :1]) * F.ones((self.units,), x.dtype), self.recurrent_dropout, n)
        return dp, rdp

    def _masked_projection(self, x, dp):
        """The hoisted input projection with the input mask(s) applied to x before it, as Keras
        multiplies the step's input: one mask is one GEMM; a mask per gate projects each gate's
        masked copy of x through that gate's columns of the kernel. ``x`` is time-major."""
        if dp is None:
            return self._input_projection(x)
        ms = [F.expand_dims(m, 0) for m in dp]  # (1, B, F): the same at every step
        if len(ms) == 1:
            return self._input_projection(x * ms[0])
        u, b = self.units, self._input_bias()
        xp = F.concatenate([(x * m) @ self.kernel[:, g * u:(g + 1) * u] for g, m in enumerate(ms)], axis=-1)
        return xp + b if b is not None else xp

    def _run(self, x, training, mask, zero_output: bool):
        dp, rdp = self._dropout_masks(x, training)
        # time first, as gc.scan steps: x is transposed before the projection (F wide, not
        # gates*units), so the GEMM writes each step's rows contiguously
        xp = self._masked_projection(F.transpose(x, (1, 0, 2)), dp)
        h0 = F.zeros_like(xp[0, :, :self.units])
        init = tuple([h0] * self._n_states)
        if mask is not None and mask.dtype != np.dtype(bool):
            mask = F.cast(mask, "bool")  # a numeric mask given by keyword: nonzero keeps a step (Keras' rnn)
        xs = xp if mask is None else (xp, F.expand_dims(F.transpose(mask, (1, 0)), -1))

        def body(states, inp):
            xt, mt = (inp, None) if mask is None else inp
            new, out = self._step(states, xt, rdp)
            if mt is None:
                return new, out
            new = tuple(F.where(mt, n, s) for n, s in zip(new, states))
            return new, (F.where(mt, out, 0.0) if zero_output else new[0])

        # checkpoint=False: the forward loop saves what the reverse step reads (as cuDNN does)
        # instead of the reverse loop recomputing each step's forward (cpu compiles the scan
        # as a loop; unrolled targets compile both modes to the same step)
        final, ys = F.scan(body, init, xs, reverse=self.go_backwards, unroll=self.unroll,
                           checkpoint=False)
        if self.return_sequences:
            out = ys[::-1] if self.go_backwards else ys  # Keras: the steps in processing order
            out = F.transpose(out, (1, 0, 2))
        else:
            out = final[0]  # the last step's output is its h (carried through masked steps)
        return [out] + list(final) if self.return_state else out


class SimpleRNN(_RNN):
    """``keras.layers.SimpleRNN``: ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``;
    in training ``x_t`` and ``h_{t-1}`` are multiplied by the call's ``dropout`` and
    ``recurrent_dropout`` masks (one each, the same at every step)."""

    _cell = "simple_rnn_cell"

    def __init__(self, units: int, activation="tanh", use_bias: bool = True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False, seed=None,
                 name: str | None = None, **kwargs: Any):
        self._config = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        self._setup(kwargs, **self._config)

    def _step(self, states, xt, rdp=None):
        h = states[0] if rdp is None else states[0] * rdp[0]
        h = self.activation(xt + h @ self.recurrent_kernel)
        return (h,), h


class LSTM(_RNN):
    """``keras.layers.LSTM``: gates ``i, f, c, o`` in that order along the ``4*units`` axis;
    ``c_t = f*c + i*activation(z_c)``, ``h_t = o*activation(c_t)`` with i, f, o through
    ``recurrent_activation``. ``unit_forget_bias`` starts the forget gate's bias at 1.
    ``return_state`` returns ``[output, h, c]``. ``dropout``/``recurrent_dropout``: one mask on
    x and on ``h_{t-1}`` (not ``c``), or one per gate when ``recurrent_dropout > 0``."""

    _cell = "lstm_cell"
    _gates = 4
    _n_states = 2

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid", use_bias: bool = True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias: bool = True, kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, seed=None, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, stateful: bool = False,
                 unroll: bool = False, use_cudnn="auto", name: str | None = None, **kwargs: Any):
        self._config = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        self._setup(kwargs, **self._config)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_init(self):
        if not self.unit_forget_bias or not isinstance(self.bias_initializer, str):
            return self.bias_initializer
        if self.bias_initializer not in ("zeros", "ones"):
            raise NotImplementedError(f"LSTM(unit_forget_bias=True): bias_initializer={self.bias_initializer!r} "
                                      "with unit_forget_bias is not supported; use 'zeros'/'ones', an array, or "
                                      "unit_forget_bias=False")
        u = self.units
        b = np.full(4 * u, 1.0 if self.bias_initializer == "ones" else 0.0, np.float32)
        b[u:2 * u] = 1.0  # Keras: concat(init(u), ones(u), init(2u))
        return b

    def _step(self, states, xt, rdp=None):
        h, c = states
        u = self.units
        if rdp is None:
            z = xt + h @ self.recurrent_kernel
        else:  # a recurrent mask per gate (Keras' implementation 1)
            U = self.recurrent_kernel
            z = xt + F.concatenate([(h * m) @ U[:, g * u:(g + 1) * u] for g, m in enumerate(rdp)], axis=-1)
        ra, act = self.recurrent_activation, self.activation
        i, f, g, o = ra(z[:, :u]), ra(z[:, u:2 * u]), act(z[:, 2 * u:3 * u]), ra(z[:, 3 * u:])
        c = f * c + i * g
        h = o * act(c)
        return (h, c), h


class GRU(_RNN):
    """``keras.layers.GRU``: gates ``z, r, h`` along the ``3*units`` axis,
    ``h_t = z*h_{t-1} + (1-z)*hh``. ``reset_after=True`` (Keras' default) has ``bias`` of shape
    ``(2, 3*units)`` (input and recurrent biases) and ``hh = activation(x W_h + b_ih + r*(h U_h
    + b_rh))``; ``reset_after=False`` has ``bias`` ``(3*units,)`` and
    ``hh = activation(x W_h + b_h + (r*h) U_h)``. ``dropout``/``recurrent_dropout`` as LSTM's:
    the masked ``h_{t-1}`` feeds the gates only; ``h_t``'s ``z*h_{t-1}`` term is unmasked."""

    _cell = "gru_cell"
    _gates = 3

    def __init__(self, units: int, activation="tanh", recurrent_activation="sigmoid", use_bias: bool = True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout: float = 0.0, recurrent_dropout: float = 0.0, seed=None,
                 return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, reset_after: bool = True, use_cudnn="auto",
                 name: str | None = None, **kwargs: Any):
        self._config = {k: v for k, v in locals().items() if k not in ("self", "kwargs", "__class__")}
        self._setup(kwargs, **self._config)
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias(self):
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def _step(self, states, xt, rdp=None):
        (h,) = states
        u = self.units
        ra, act = self.recurrent_activation, self.activation
        # h_{t-1} as each gate sees it: a recurrent mask per gate (Keras' implementation 1)
        hz, hr, hh_in = (h, h, h) if rdp is None else (h * rdp[0], h * rdp[1], h * rdp[2])
        U = self.recurrent_kernel
        if self.reset_after and rdp is not None:
            inner = F.concatenate([hz @ U[:, :u], hr @ U[:, u:2 * u], hh_in @ U[:, 2 * u:]], axis=-1)
            if self.bias is not None:
                inner = inner + self.bias[1]
            z = ra(xt[:, :u] + inner[:, :u])
            r = ra(xt[:, u:2 * u] + inner[:, u:2 * u])
            hh = act(xt[:, 2 * u:] + r * inner[:, 2 * u:])
        elif self.reset_after:
            inner = h @ self.recurrent_kernel
            if self.bias is not None:
                inner = inner + self.bias[1]
            z = ra(xt[:, :u] + inner[:, :u])
            r = ra(xt[:, u:2 * u] + inner[:, u:2 * u])
            hh = act(xt[:, 2 * u:] + r * inner[:, 2 * u:])
        elif rdp is not None:
            z = ra(xt[:, :u] + hz @ U[:, :u])
            r = ra(xt[:, u:2 * u] + hr @ U[:, u:2 * u])
            hh = act(xt[:, 2 * u:] + (r * hh_in) @ U[:, 2 * u:])
        else:
            inner = h @ self.recurrent_kernel[:, :2 * u]
            z = ra(xt[:, :u] + inner[:, :u])
            r = ra(xt[:, u:2 * u] + inner[:, u:])
            hh = act(xt[:, 2 * u:] + (r * h) @ self.recurrent_kernel[:, 2 * u:])
        h = z * h + (1.0 - z) * hh
        return (h,), h


class Bidirectional(Layer):
    """``keras.layers.Bidirectional(layer, merge_mode='concat', backward_layer=None)``: runs a
    copy of ``layer`` forwards (named ``forward_<name>``) and one with ``go_backwards=True``
    (``backward_<name>``, or ``backward_layer``), flips the backward sequence back to input
    order and merges: ``concat`` (default), ``sum``, ``mul``, ``ave`` or ``None`` (both outputs,
    as a list). Weights as Keras names them: ``<bidirectional>/forward_lstm/lstm_cell/kernel``,
    ..., the forward layer's first. With ``return_state`` the states follow the output:
    forward ones, then backward ones."""

    ndim = 3
    supports_masking = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, name: str | None = None,
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        if not isinstance(layer, _RNN):
            raise ValueError(f"Bidirectional: expected a recurrent layer (SimpleRNN, LSTM, GRU), got {layer!r}")
        if backward_layer is not None and not isinstance(backward_layer, _RNN):
            raise ValueError(f"Bidirectional: backward_layer must be a recurrent layer, got {backward_layer!r}")
        if merge_mode not in ("sum", "mul", "ave", "concat", None):
            raise ValueError(f"Bidirectional: invalid merge_mode {merge_mode!r}; choose from 'sum', 'mul', 'ave', "
                             "'concat' or None")
        if weights is not None:
            raise NotImplementedError("Bidirectional(weights=...): set the weights after building instead")
        base = layer._given_name or layer.default_name
        self.forward_layer = type(layer)(**dict(layer._config, name=f"forward_{base.removeprefix('forward_')}"))
        if backward_layer is None:
            self.backward_layer = type(layer)(**dict(layer._config, go_backwards=not layer.go_backwards,
                                                     name=f"backward_{base.removeprefix('backward_')}"))
        else:
            self.backward_layer = backward_layer
            if backward_layer._given_name is None:
                backward_layer.name = f"backward_{backward_layer.default_name}"
        fwd, bwd = self.forward_layer, self.backward_layer
        if fwd.go_backwards == bwd.go_backwards:
            raise ValueError(f"Bidirectional: the forward and backward layers must have different go_backwards, "
                             f"got {fwd.go_backwards} for both")
        for a in ("return_sequences", "return_state"):
            if getattr(fwd, a) != getattr(bwd, a):
                raise ValueError(f"Bidirectional: the forward and backward layers must agree on {a}, got "
                                 f"{getattr(fwd, a)} and {getattr(bwd, a)}")
        for lay in (fwd, bwd):
            lay.zero_output_for_mask = lay.return_sequences  # as Keras' Bidirectional forces it
        self.merge_mode = merge_mode
        self.return_sequences, self.return_state = fwd.return_sequences, fwd.return_state

    def build(self, input_shape):
        for lay in (self.forward_layer, self.backward_layer):
            lay._declare(self.add_weight, f"{lay.name or lay.default_name}/{lay._cell}/", input_shape)

    def get_config(self):
        def entry(lay):
            return {"module": "keras.layers", "class_name": type(lay).__name__, "config": lay.get_config(),
                    "registered_name": None}
        return {**super().get_config(), "merge_mode": self.merge_mode, "layer": entry(self.forward_layer),
                "backward_layer": entry(self.backward_layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        kinds = {"SimpleRNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}

        def sub(d):
            if d.get("class_name") not in kinds:
                raise ValueError(f"Bidirectional: the wrapped layer {d.get('class_name')!r} is not supported; "
                                 f"graphc has {sorted(kinds)}")
            return kinds[d["class_name"]].from_config(d.get("config") or {})
        layer = sub(config.pop("layer"))
        back = config.pop("backward_layer", None)
        return cls(layer, backward_layer=sub(back) if back else None, **_config_kwargs(cls, config))

    def _keras_weight_groups(self):
        """Keras: ``<bidirectional>/forward_layer/cell/vars`` and ``backward_layer/cell/vars``."""
        name = self.name or self.default_name
        groups = [("", name, [])]
        for attr in ("forward_layer", "backward_layer"):
            lay = getattr(self, attr)
            prefix = f"{name}/{lay.name or lay.default_name}/"
            groups += [(attr, lay.name or lay.default_name, []),
                       (f"{attr}/cell", lay._cell, [w for w in self.weights if w.name.startswith(prefix)])]
        return groups

    def _one_shape(self, lay, input_shape):
        return lay.compute_output_shape(input_shape)

    def compute_output_shape(self, input_shape):
        f = self.forward_layer.compute_output_shape(input_shape)
        if self.merge_mode == "concat":
            return f[:-1] + (f[-1] + self.backward_layer.compute_output_shape(input_shape)[-1],)
        return f

    def _extra_output_shapes(self):
        extra = [self.backward_layer.compute_output_shape(self.input_shape)] if self.merge_mode is None else []
        return extra + self.forward_layer._extra_output_shapes() + self.backward_layer._extra_output_shapes()

    def compute_mask(self, x, mask):
        return mask if self.return_sequences and self.merge_mode is not None else None

    def call(self, x, training=False, mask=None):
        outs = []
        for lay in (self.forward_layer, self.backward_layer):
            lay._model = self._model  # the model's seed for input dropout
            r = lay._run(x, training, mask, lay.zero_output_for_mask)
            outs.append(r if self.return_state else [r])
        y, y_rev = outs[0][0], outs[1][0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1, :]
        mode = self.merge_mode
        if mode == "concat":
            merged = [F.concatenate([y, y_rev], axis=-1)]
        elif mode == "sum":
            merged = [y + y_rev]
        elif mode == "ave":
            merged = [(y + y_rev) * 0.5]
        elif mode == "mul":
            merged = [y * y_rev]
        else:
            merged = [y, y_rev]
        res = merged + outs[0][1:] + outs[1][1:]
        return res[0] if len(res) == 1 else res
