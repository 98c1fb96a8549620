"""graphc.nn: a Keras-style layer API on top of the compiler.

Code written for Keras ports with few changes (``Sequential`` or the functional API,
``Model(inputs, outputs)`` over ``Input`` tensors)::

    from graphc.nn import Sequential, Dense
    from graphc.nn.optimizers import Adam

    model = Sequential([Dense(10, activation='relu', input_shape=(10,)), Dense(1)])
    model.compile(optimizer=Adam(learning_rate=0.01), loss='mse', metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=10)

Each fit() batch runs ONE compiled graphc training step (forward, backward, update and the
metrics). ``compile(target=...)`` picks the backend ("cpu" by default; "parallel", "numpy",
"cuda"); ``seed`` makes weight init, shuffling and dropout reproducible.
"""
from . import activations, callbacks, initializers, layers, losses, metrics, optimizers, regularizers  # noqa: F401
from .callbacks import (  # noqa: F401
    Callback, CSVLogger, EarlyStopping, History, LambdaCallback, LearningRateScheduler, ModelCheckpoint,
    ReduceLROnPlateau, TerminateOnNaN,
)
from .layers import (  # noqa: F401
    GRU, LSTM, Activation, Add, Average, AveragePooling1D, AveragePooling2D, BatchNormalization, Bidirectional,
    Concatenate, Conv1D, Conv2D, Dense, Dropout, Embedding, Flatten, GlobalAveragePooling1D, GlobalAveragePooling2D,
    GlobalMaxPooling1D, GlobalMaxPooling2D, Input, InputLayer, KerasTensor, Lambda, Layer, LayerNormalization, Masking,
    MaxPooling1D, MaxPooling2D, Maximum, Minimum, MultiHeadAttention, Multiply, PositionEmbedding, Reshape,
    SimpleRNN, Subtract,
)
from .layers import (  # noqa: F401
    ELU, Conv2DTranspose, Cropping2D, DepthwiseConv2D, LeakyReLU, Normalization, PReLU, ReLU, Rescaling,
    SeparableConv2D, Softmax, UpSampling2D, ZeroPadding2D,
)
from .model import Model, Sequential  # noqa: F401
from . import models, saving, utils  # noqa: F401,E402
from .keras_format import KerasFormatError  # noqa: F401
from .saving import load_model  # noqa: F401

__all__ = ["Model", "Sequential", "Dense", "Activation", "Dropout", "Flatten", "Reshape", "Input", "InputLayer",
           "KerasTensor", "Lambda", "Layer", "LayerNormalization", "Embedding", "Conv2D", "MaxPooling2D",
           "AveragePooling2D",
           "GlobalAveragePooling2D", "GlobalMaxPooling2D", "BatchNormalization", "MultiHeadAttention",
           "PositionEmbedding", "Masking", "SimpleRNN", "LSTM", "GRU", "Bidirectional", "Conv1D", "MaxPooling1D",
           "AveragePooling1D", "GlobalAveragePooling1D", "GlobalMaxPooling1D",
           "LeakyReLU", "PReLU", "ELU", "ReLU", "Softmax", "ZeroPadding2D", "Cropping2D", "UpSampling2D",
           "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "Rescaling", "Normalization",
           "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
           "Callback", "EarlyStopping", "LearningRateScheduler", "ReduceLROnPlateau", "History",
           "TerminateOnNaN", "LambdaCallback", "ModelCheckpoint", "CSVLogger",
           "activations", "callbacks", "initializers", "layers", "losses", "metrics", "optimizers", "regularizers",
           "models", "saving", "utils", "load_model", "KerasFormatError"]
