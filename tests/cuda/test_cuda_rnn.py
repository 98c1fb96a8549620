"""graphc.nn's recurrent and 1-D layers on cuda against the interpreter: a masked LSTM feeding
a GRU that runs backwards (gc.scan unrolled, masks carrying the state through padded steps) and
a causal Conv1D, forward and gradients of every weight and the input."""
from __future__ import annotations

import numpy as np

import graphc as gc
import graphc.nn as gn
from helpers import check_cuda


def test_masked_lstm_gru_and_causal_conv1d():
    x = gc.input("cn_x", (2, 3, 2))
    mask = gc.input("cn_mask", (2, 3), "bool")
    lstm = gn.LSTM(3, return_sequences=True, name="cn_lstm")
    gru = gn.GRU(2, go_backwards=True, name="cn_gru")
    conv = gn.Conv1D(2, 2, padding="causal", activation="tanh", name="cn_conv")
    for layer, shape in ((lstm, (3, 2)), (gru, (3, 3)), (conv, (3, 2))):
        layer._build(shape)
    y = gru.call(lstm.call(x, mask=mask), mask=mask)
    c = conv.call(x)
    r = np.random.default_rng(0)
    feeds = {"cn_x": r.standard_normal((2, 3, 2)).astype("float32"),
             "cn_mask": np.array([[True, True, False], [False, True, True]])}
    check_cuda([y, c], wrt=[x] + lstm.weights + gru.weights + conv.weights, feeds=feeds)
