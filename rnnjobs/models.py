"""Model building: training and prediction models from one recorded architecture.

An *architecture* is JSON data::

    {"hidden_layers": [{"type": "LSTM", "units": 20}, {"type": "Dense", "units": 10}],
     "output_activation": "linear", "n_features": 3, "n_targets": 1,
     "return_sequences": true}

The training model has a fixed ``Input(batch_shape=(batch_size, timesteps,
n_features))`` and may be stateful. The prediction model has the same layers in
the same order with ``batch_shape=(None, None, n_features)`` and
``stateful=False``, so the weights of one load into the other. Layer names are
fixed by position, so the two models list their weights in the same order.
"""

import hashlib

import keras
import numpy as np
from keras import layers, ops, tree

from rnnjobs.spec import RECURRENT_LAYERS

_STATE_COUNT = {"SimpleRNN": 1, "GRU": 1, "LSTM": 2}


class ArchitectureMismatchError(ValueError):
    """Weights recorded for one architecture do not fit the model they are loaded into."""


def _last_recurrent_index(hidden_layers):
    indices = [i for i, spec in enumerate(hidden_layers) if spec["type"] in RECURRENT_LAYERS]
    return indices[-1] if indices else -1


def _layer_seeds(seed, index):
    """Return seeds for a layer's kernel, recurrent kernel and dropout masks, derived from the job's seed.

    Keras 3.15 draws the seed of an unseeded initializer or dropout layer from
    Python's global ``random``. Other threads of the process, such as a Dask
    worker's event loop, draw from it too, so explicit seeds are what make the
    initial weights and dropout masks repeat.
    """
    if seed is None:
        return {}
    kernel, recurrent, dropout = (int(value) & 0x7FFFFFFF for value in np.random.SeedSequence([seed, index]).generate_state(3))
    return {
        "kernel_initializer": keras.initializers.GlorotUniform(seed=kernel),
        "recurrent_initializer": keras.initializers.Orthogonal(seed=recurrent),
        "seed": dropout,
    }


def _dense(units, activation, name, seeds):
    initializer = {"kernel_initializer": seeds["kernel_initializer"]} if seeds else {}
    return layers.Dense(units, activation=activation, name=name, **initializer)


def _make_layer(index, spec, *, stateful, return_sequences, return_state=False, seed=None):
    kind = spec["type"]
    name = f"{kind.lower()}_{index}"
    seeds = _layer_seeds(seed, index)
    if kind == "Dense":
        return _dense(spec["units"], spec.get("activation", "linear"), name, seeds)
    if kind == "Dropout":
        return layers.Dropout(spec["rate"], name=name, seed=seeds.get("seed"))
    options = {
        "units": spec["units"],
        "activation": spec.get("activation", "tanh"),
        "dropout": spec.get("dropout", 0.0),
        "recurrent_dropout": spec.get("recurrent_dropout", 0.0),
        "stateful": stateful,
        "return_sequences": return_sequences,
        "return_state": return_state,
        "name": name,
        **seeds,
    }
    if kind != "SimpleRNN":
        options["recurrent_activation"] = spec.get("recurrent_activation", "sigmoid")
    return getattr(layers, kind)(**options)


class TrainingModel(keras.Model):
    """The training model: it takes batches ``(x, y, reset)`` and zeroes stateful RNN states where ``reset`` is true.

    Resetting inside the training step, rather than from a per-batch
    callback, keeps the reset in the compiled step, so several steps can run
    per call (``steps_per_execution``) and under XLA. ``reset`` is one boolean
    per batch, and models without stateful layers ignore it. Batches ``(x, y)``
    and ``(x, y, None)`` (from ``train_on_batch``) train without resets. A
    third element is always taken as ``reset``, never as sample weights.
    """

    @property
    def jit_compile(self):
        return keras.Model.jit_compile.fget(self)

    @jit_compile.setter
    def jit_compile(self, value):
        # Keras 3.15 turns XLA off whenever TensorFlow's op determinism is on,
        # because some XLA kernels are not deterministic on GPUs. On a machine
        # without GPUs XLA stays on, since its CPU kernels gave the same weights
        # on every run in the tests. Layers that cannot be compiled still veto it.
        import tensorflow as tf

        cpu_only = not tf.config.list_physical_devices("GPU")
        if value and cpu_only and all(layer.supports_jit for layer in self._flatten_layers()):
            self._jit_compile = True
        else:
            keras.Model.jit_compile.fset(self, value)

    def _reset_states_if(self, reset):
        for layer in self.layers:
            if getattr(layer, "stateful", False) and layer.states is not None:
                for state in tree.flatten(layer.states):
                    state.assign(ops.where(reset, ops.zeros_like(state.value), state.value))

    def _take_reset(self, data):
        """Apply the reset flag of a batch ``(x, y, reset)`` and return ``(x, y)``."""
        if len(data) == 3:
            x, y, reset = data
            if reset is not None:
                self._reset_states_if(reset)
            data = (x, y)
        return data

    def train_step(self, data):
        return super().train_step(self._take_reset(data))

    def test_step(self, data):
        return super().test_step(self._take_reset(data))


def build_training_model(architecture, batch_size, timesteps, stateful=False, seed=None):
    """Build the training model with a fixed input shape.

    Parameters
    ----------
    architecture : dict
        See the module docstring.
    batch_size, timesteps : int
        Fixed input shape; stateful models need both fixed.
    stateful : bool, default=False
        Carry RNN states from one batch to the next.
    seed : int or None, default=None
        Seed of the initial weights and dropout masks. None leaves them to
        Python's global ``random``, which other threads can draw from.

    Returns
    -------
    TrainingModel
        Its ``fit`` and ``evaluate`` take batches ``(x, y, reset)``.
    """
    hidden = architecture["hidden_layers"]
    last_recurrent = _last_recurrent_index(hidden)
    inputs = keras.Input(batch_shape=(batch_size, timesteps, architecture["n_features"]), name="features")
    outputs = inputs
    for index, spec in enumerate(hidden):
        sequences = index < last_recurrent or architecture.get("return_sequences", True)
        outputs = _make_layer(index, spec, stateful=stateful, return_sequences=sequences, seed=seed)(outputs)
    head = _dense(architecture["n_targets"], architecture.get("output_activation", "linear"), "output", _layer_seeds(seed, len(hidden)))
    return TrainingModel(inputs, head(outputs), name="training_model")


def build_prediction_model(architecture, carry_state=False):
    """Build the prediction model: any batch size, any length, stateless, a target at every step.

    Parameters
    ----------
    architecture : dict
        See the module docstring.
    carry_state : bool, default=False
        If true, the model also takes the initial state of each recurrent layer
        as inputs and returns the final states after its predictions, so a long
        series can be predicted in consecutive time chunks.

    Returns
    -------
    keras.Model
        Maps ``(batch, time, n_features)`` to ``(batch, time, n_targets)``; with
        ``carry_state``, maps ``[x, *states]`` to ``[y, *states]``.
    """
    inputs = keras.Input(batch_shape=(None, None, architecture["n_features"]), name="features")
    state_inputs, state_outputs = [], []
    outputs = inputs
    for index, spec in enumerate(architecture["hidden_layers"]):
        layer = _make_layer(index, spec, stateful=False, return_sequences=True, return_state=carry_state)
        if carry_state and spec["type"] in RECURRENT_LAYERS:
            initial = [
                keras.Input(batch_shape=(None, spec["units"]), name=f"{layer.name}_state_{k}")
                for k in range(_STATE_COUNT[spec["type"]])
            ]
            state_inputs.extend(initial)
            outputs, *final = layer(outputs, initial_state=initial)
            state_outputs.extend(final)
        else:
            outputs = layer(outputs)
    outputs = layers.Dense(architecture["n_targets"], activation=architecture.get("output_activation", "linear"), name="output")(outputs)
    if carry_state:
        return keras.Model([inputs, *state_inputs], [outputs, *state_outputs], name="prediction_model")
    return keras.Model(inputs, outputs, name="prediction_model")


def zero_states(architecture, batch_size):
    """Return zero initial states for a ``carry_state`` prediction model."""
    states = []
    for spec in architecture["hidden_layers"]:
        if spec["type"] in RECURRENT_LAYERS:
            states.extend(np.zeros((batch_size, spec["units"]), np.float32) for _ in range(_STATE_COUNT[spec["type"]]))
    return states


def reset_states(model):
    """Reset the state of every stateful recurrent layer of ``model`` to zeros."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def masked_loss(name):
    """Return a loss that ignores NaN targets.

    The loss is the mean over valid targets only, so a batch's loss does not
    depend on how many of its targets are missing. A batch without valid
    targets contributes zero.
    """

    def masked(y_true, y_pred):
        valid = ops.logical_not(ops.isnan(y_true))
        error = ops.where(valid, y_true - y_pred, ops.zeros_like(y_pred))
        error = ops.square(error) if name == "mse" else ops.abs(error)
        count = ops.maximum(ops.sum(ops.cast(valid, error.dtype)), 1.0)
        return ops.sum(error) / count

    masked.__name__ = f"masked_{name}"
    return masked


def weight_layout(model):
    """Return ``[(path, shape), ...]`` of the model's weights, the structure weights load by."""
    return [(weight.path, list(weight.shape)) for weight in model.weights]


def weights_hash(model):
    """Return the SHA-256 of the raw bytes of the model's weights, with their shapes and dtypes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        values = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def check_weight_layout(recorded, model, source):
    """Raise :class:`ArchitectureMismatchError` naming the first weight that differs.

    Parameters
    ----------
    recorded : list of (str, list of int)
        The layout stored with the weights, from :func:`weight_layout`.
    model : keras.Model
        The model the weights are to load into.
    source : str
        The weights file, for the message.
    """
    expected = weight_layout(model)
    for index, (have, want) in enumerate(zip(recorded, expected)):
        if list(have[1]) != list(want[1]) or have[0].split("/")[0] != want[0].split("/")[0]:
            raise ArchitectureMismatchError(
                f"{source}: weight {index} is {have[0]} with shape {tuple(have[1])}, but the model "
                f"expects {want[0]} with shape {tuple(want[1])}; the file was trained for another architecture"
            )
    if len(recorded) != len(expected):
        raise ArchitectureMismatchError(
            f"{source}: the file has {len(recorded)} weight arrays, the model expects {len(expected)}; "
            "the file was trained for another architecture"
        )


def count_trainable(model):
    """Return the number of trainable parameters of ``model``."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
