"""The trainer's memo of compiled programs (graphc/nn/trainer.py ``CompiledFunctions``) and
fit's batching (graphc/nn/data.py ``EpochBatches``): unit tests without compiling, and one
model on the numpy target (no native compile) that checks the programs share one store."""
import numpy as np
import pytest

from graphc.nn import Dense, Sequential
from graphc.nn.data import EpochBatches, batch_bounds
from graphc.nn.trainer import CompiledFunctions


def test_memo_keeps_each_program_by_what_it_computes():
    fns = CompiledFunctions()
    assert fns.owner() is None and fns.training_step() is None and len(fns) == 0
    predict, test_w, dp = object(), object(), object()
    assert fns.put("predict", False, False, predict) is predict
    assert fns.owner() is predict and fns.training_step() is None
    fns.put("test", True, False, test_w)
    assert fns.owner() is test_w  # a test function before predict
    fns.put("train", False, True, dp)
    assert fns.owner() is dp and fns.training_step() is None  # data-parallel steps are not checkpointed
    train_w = fns.put("train", True, False, object())
    assert fns.owner() is train_w and fns.training_step() is train_w
    train = fns.put("train", False, False, object())
    assert fns.owner() is train and fns.training_step() is train
    assert fns.get("train", weighted=True) is train_w and fns.get("train", distributed=True) is dp
    assert fns.get("test") is None and fns.get("test", weighted=True) is test_w and len(fns) == 5
    fns.clear()
    assert len(fns) == 0 and fns.owner() is None and fns.get("predict") is None


def test_memo_refuses_unknown_programs_and_rebuilding_one():
    fns = CompiledFunctions()
    with pytest.raises(ValueError, match="'eval'"):
        fns.get("eval")
    with pytest.raises(ValueError, match="data-parallel"):
        fns.put("predict", False, True, object())
    fns.put("test", False, False, object())
    with pytest.raises(ValueError, match="already"):
        fns.put("test", False, False, object())


def test_batch_bounds_cover_every_sample_once():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(8, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(3, 32) == [(0, 3)]


def test_epoch_batches_continue_a_pass_across_epochs():
    """steps_per_epoch: an epoch takes that many batches and the next continues the same
    (shuffled) pass; when the pass runs out mid-epoch the epoch ends (None), and the next
    epoch starts a new pass from a new order."""
    orders = iter([np.arange(10)[::-1], np.arange(10)])
    b = EpochBatches(10, 4, steps_per_epoch=2)
    assert b.steps == 2 and b.per_pass == 3
    e1 = list(b.epoch(lambda: next(orders)))
    assert [i for i, _ in e1] == [0, 1] and [list(x) for _, x in e1] == [[9, 8, 7, 6], [5, 4, 3, 2]]
    e2 = list(b.epoch(lambda: next(orders)))
    assert [list(x) if x is not None else None for _, x in e2] == [[1, 0], None]
    e3 = list(b.epoch(lambda: next(orders)))
    assert [list(x) for _, x in e3] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_epoch_batches_without_steps_per_epoch_and_without_shuffling():
    b = EpochBatches(5, 2)
    for _ in range(2):  # every epoch is one whole pass, in order (no order given: no shuffling)
        assert [list(x) for _, x in b.epoch(lambda: None)] == [[0, 1], [2, 3], [4]]


def test_the_programs_of_a_model_share_one_store():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8, 1)).astype(np.float32)
    m = Sequential([Dense(1, input_shape=(3,))])
    m.compile(optimizer="sgd", loss="mse", target="numpy")
    fns = m._functions
    before = m.predict(x)
    assert fns.owner() is fns.get("predict") and fns.training_step() is None
    m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    step = fns.training_step()
    assert step is not None and fns.owner() is step and len(fns) == 2
    assert m.train_function is step and m.predict_function is fns.get("predict")
    after = m.predict(x)  # the predict function built before fit sees the trained weights
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, x @ m.get_weights()[0] + m.get_weights()[1], rtol=1e-5, atol=1e-6)
    m.evaluate(x, y, verbose=0)
    assert fns.get("test") is m.test_function and len(fns) == 3
    w = m.get_weights()
    m.compile(optimizer="sgd", loss="mse", target="numpy")  # recompiling forgets the programs, keeps the weights
    assert len(m._functions) == 0
    np.testing.assert_array_equal(m.get_weights()[0], w[0])
