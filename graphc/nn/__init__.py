"""graphc.nn: a Keras-style layer API on top of the compiler.

Code written for Keras ports with few changes::

    from graphc.nn import Sequential, Dense
    from graphc.nn.optimizers import Adam

    model = Sequential([Dense(10, activation='relu', input_shape=(10,)), Dense(1)])
    model.compile(optimizer=Adam(learning_rate=0.01), loss='mse', metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=10)

Each fit() batch runs ONE compiled graphc training step (forward, backward, update and the
metrics). ``compile(target=...)`` picks the backend ("cpu" by default; "parallel", "numpy",
"cuda"); ``seed`` makes weight init, shuffling and dropout reproducible.
"""
from . import activations, callbacks, losses, metrics, optimizers  # noqa: F401
from .callbacks import (  # noqa: F401
    Callback, EarlyStopping, History, LambdaCallback, LearningRateScheduler, ReduceLROnPlateau, TerminateOnNaN,
)
from .layers import (  # noqa: F401
    Activation, Dense, Dropout, Embedding, Flatten, Input, InputLayer, Layer, LayerNormalization,
)
from .model import Sequential  # noqa: F401

__all__ = ["Sequential", "Dense", "Activation", "Dropout", "Flatten", "Input", "InputLayer", "Layer",
           "LayerNormalization", "Embedding",
           "Callback", "EarlyStopping", "LearningRateScheduler", "ReduceLROnPlateau", "History",
           "TerminateOnNaN", "LambdaCallback", "activations", "callbacks", "losses", "metrics", "optimizers"]
