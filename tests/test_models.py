"""Training and prediction models built from one architecture share their weights."""

import numpy as np
import pytest

from rnnjobs import models
from rnnjobs.modelfile import load_model_weights

BATCH, STEPS, FEATURES = 4, 5, 3


def architecture(layer_type, n_targets=1):
    return {
        "hidden_layers": [{"type": layer_type, "units": 6}, {"type": "Dense", "units": 4, "activation": "relu"}],
        "output_activation": "linear",
        "n_features": FEATURES,
        "n_targets": n_targets,
        "return_sequences": True,
    }


def copy_into_prediction_model(training, arch, tmp_path, carry_state=False):
    path = str(tmp_path / "copy.weights.h5")
    training.save_weights(path)
    prediction = models.build_prediction_model(arch, carry_state=carry_state)
    load_model_weights(prediction, path, {"weight_layout": models.weight_layout(training)})
    return prediction


@pytest.mark.parametrize("stateful", [False, True])
@pytest.mark.parametrize("layer_type", ["SimpleRNN", "LSTM", "GRU"])
def test_prediction_equals_training_model(layer_type, stateful, tmp_path):
    arch = architecture(layer_type)
    training = models.build_training_model(arch, BATCH, STEPS, stateful=stateful)
    prediction = copy_into_prediction_model(training, arch, tmp_path)
    x = np.random.default_rng(0).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)

    expected = training.predict_on_batch(x)
    got = prediction.predict_on_batch(x)

    assert got.shape == (BATCH, STEPS, 1)
    assert np.max(np.abs(got - expected)) <= 1e-6
    assert models.count_trainable(training) == models.count_trainable(prediction)


@pytest.mark.parametrize("batch_size", [1, 3, 109])
@pytest.mark.parametrize("length", [1, 7, 500])
def test_prediction_model_any_shape(batch_size, length):
    prediction = models.build_prediction_model(architecture("LSTM"))
    x = np.random.default_rng(1).normal(size=(batch_size, length, FEATURES)).astype(np.float32)

    y = prediction.predict_on_batch(x)

    assert y.shape == (batch_size, length, 1)
    assert np.isfinite(y).all()


def test_many_to_one_training_matches_last_step(tmp_path):
    arch = dict(architecture("GRU"), return_sequences=False)
    training = models.build_training_model(arch, BATCH, STEPS)
    prediction = copy_into_prediction_model(training, arch, tmp_path)
    x = np.random.default_rng(2).normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)

    expected = training.predict_on_batch(x)
    got = prediction.predict_on_batch(x)

    assert expected.shape == (BATCH, 1)
    assert np.max(np.abs(got[:, -1, :] - expected)) <= 1e-6


def test_wrong_architecture_names_first_mismatch(tmp_path):
    training = models.build_training_model(architecture("LSTM"), BATCH, STEPS)
    path = str(tmp_path / "lstm.weights.h5")
    training.save_weights(path)
    other = models.build_prediction_model(dict(architecture("LSTM"), hidden_layers=[{"type": "LSTM", "units": 7}, {"type": "Dense", "units": 4}]))

    with pytest.raises(models.ArchitectureMismatchError, match=r"weight 0 is lstm_0/lstm_cell/kernel with shape \(3, 24\)"):
        load_model_weights(other, path, {"weight_layout": models.weight_layout(training)})


def test_stacked_lstm_chunked_state_equals_whole(tmp_path):
    arch = dict(architecture("LSTM"), hidden_layers=[{"type": "LSTM", "units": 5}, {"type": "LSTM", "units": 4}])
    training = models.build_training_model(arch, BATCH, 20)
    plain = copy_into_prediction_model(training, arch, tmp_path)
    carrying = copy_into_prediction_model(training, arch, tmp_path, carry_state=True)
    x = np.random.default_rng(3).normal(size=(BATCH, 20, FEATURES)).astype(np.float32)

    fixed = training.predict_on_batch(x)
    whole = plain.predict_on_batch(x)
    states = models.zero_states(arch, BATCH)
    pieces = []
    for start in range(0, 20, 5):
        y, *states = carrying.predict_on_batch([x[:, start : start + 5], *states])
        pieces.append(y)
    chunked = np.concatenate(pieces, axis=1)

    assert np.max(np.abs(whole - fixed)) <= 1e-5
    assert np.max(np.abs(chunked - whole)) <= 1e-5
    assert np.array_equal(plain.predict_on_batch(x), whole)


def test_masked_loss_ignores_nan_targets():
    loss = models.masked_loss("mse")
    y_true = np.array([[1.0, np.nan], [3.0, np.nan]], np.float32)
    y_pred = np.array([[2.0, 100.0], [1.0, -5.0]], np.float32)

    value = float(loss(y_true, y_pred))

    assert value == pytest.approx((1.0 + 4.0) / 2)


def tf_batches(x, y, reset):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((x, y, np.bool_(reset)))


def test_training_model_reset_flag_zeroes_states():
    arch = architecture("LSTM")
    model = models.build_training_model(arch, BATCH, STEPS, stateful=True)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(BATCH, STEPS, FEATURES)).astype(np.float32)
    y = rng.normal(size=(BATCH, STEPS, 1)).astype(np.float32)
    lstm = model.get_layer("lstm_0")

    model.train_on_batch(x, y)
    carried = [np.array(state) for state in lstm.states]
    model.test_on_batch(x, y)
    model.evaluate(tf_batches(x, y, reset=True), verbose=0)
    after_reset_batch = [np.array(state) for state in lstm.states]

    assert any(np.abs(state).max() > 0 for state in carried)
    expected = models.build_training_model(arch, BATCH, STEPS, stateful=True)
    expected.set_weights(model.get_weights())
    expected.predict_on_batch(x)
    for got, want in zip(after_reset_batch, expected.get_layer("lstm_0").states):
        assert np.allclose(got, np.array(want), atol=1e-6)

