"""--mixed_precision: a victim and the GAN stage train under mixed_bfloat16 on the CPU with
finite losses, codes in {-1, 1} and retrieval close to float32; variables, outputs and the
exported signatures stay float32; float16 scales its loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from badhash_tf.config import GANConfig, HashingConfig, TrainConfig
from badhash_tf.data import inputs
from badhash_tf.eval import codes as code_eval
from badhash_tf.eval.retrieval import mean_average_precision
from badhash_tf.models.hashing import HashingModel
from badhash_tf.serving import export
from badhash_tf.training import gan, loop, optimizers
from badhash_tf.training.hashing import train_hashing_model


@pytest.fixture(scope="module")
def splits(data_dir):
    config = inputs.DataConfig(dataset="badhash_digits", data_dir=data_dir)
    return config, {name: inputs.load_split(config, name)
                    for name in ("train[:256]", "query[:100]", "database[:400]")}


def _victim(splits, tmp_path, precision):
    data_config, s = splits
    train = TrainConfig(seed=0, train_steps=60, global_batch_size=32, steps_per_loop=20,
                        mixed_precision=precision)
    model, result = train_hashing_model(s["train[:256]"], data_config, HashingConfig(),
                                        train, str(tmp_path / precision),
                                        tf.distribute.get_strategy())
    query, query_labels = code_eval.encode(model, inputs.eval_dataset(s["query[:100]"]))
    db, db_labels = code_eval.encode(model, inputs.eval_dataset(s["database[:400]"]))
    return model, result, query, mean_average_precision(query, db, query_labels, db_labels)


def test_a_victim_trains_in_bfloat16_close_to_float32(splits, tmp_path):
    model, result, query, figure = _victim(splits, tmp_path, "mixed_bfloat16")
    assert model.backbone.layers[0].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)  # variables stay float32
    assert model(tf.zeros((1, 32, 32, 3))).dtype == tf.float32
    assert np.isfinite(result.history["loss"]).all()
    assert set(np.unique(query)) <= {-1.0, 1.0}
    _, _, _, reference = _victim(splits, tmp_path, "off")
    assert abs(figure - reference) <= 0.05, (figure, reference)
    assert keras.config.dtype_policy().name == "float32"  # the policy was restored
    # an export reads the checkpoint into a float32 model: float32 signatures
    fresh = HashingModel(32, "small_cnn", 32)
    tf.train.Checkpoint(model=fresh).restore(
        tf.train.latest_checkpoint(str(tmp_path / "mixed_bfloat16"))).expect_partial()
    path = export.export(export.HashEncoderExport(fresh), "hash", "encoder",
                         str(tmp_path / "export"), {})
    outputs = tf.saved_model.load(path).signatures["hash"].structured_outputs
    assert outputs["logits"].dtype == tf.float32 and outputs["codes"].dtype == tf.int8


def test_the_gan_stage_trains_in_bfloat16(splits, tmp_path):
    data_config, s = splits
    rng = np.random.default_rng(0)
    condition = gan.Condition(rng.standard_normal(8).astype(np.float32),
                              rng.choice([-1.0, 1.0], 32), np.eye(10, dtype=np.float32)[2])
    config = GANConfig(base_width=4, residual_blocks=1, label_width=16, disc_width=4,
                       disc_layers=3, batch_size=16, psnr_budget=25.0)
    train = TrainConfig(seed=0, train_steps=4, steps_per_loop=2,
                        mixed_precision="mixed_bfloat16")
    generator, result = gan.train_generator(
        s["train[:256]"], data_config, config, condition,
        lambda: HashingModel(32, "small_cnn", 32), train, str(tmp_path / "gan"),
        tf.distribute.get_strategy())
    assert generator.decoder.layers[0].compute_dtype == "bfloat16"
    for name in gan.GANStage.metric_names:
        assert np.isfinite(result.history[name]).all(), name
    images = next(iter(inputs.eval_dataset(s["query[:100]"], 8)))[0]
    poisoned = generator([images, tf.tile(condition.feature[None], [8, 1])])
    assert poisoned.dtype == tf.float32  # the PSNR projection runs in float32
    mse = tf.reduce_mean(tf.square(poisoned - images), axis=(1, 2, 3)).numpy()
    assert (10 * np.log10(1.0 / mse) >= 25.0 - 1e-3).all()


def test_a_victim_trains_in_float16_with_loss_scaling(splits, tmp_path):
    data_config, s = splits
    train = TrainConfig(seed=0, train_steps=6, global_batch_size=32, steps_per_loop=3,
                        mixed_precision="mixed_float16")
    model, result = train_hashing_model(s["train[:256]"], data_config, HashingConfig(),
                                        train, str(tmp_path), tf.distribute.get_strategy())
    assert model.backbone.layers[0].compute_dtype == "float16"
    assert np.isfinite(result.history["loss"]).all() and len(result.history["loss"]) == 6


def test_float16_scales_the_loss_and_off_does_not():
    with loop.dtype_policy("mixed_float16"):
        scaled = optimizers.make_optimizer("adam", 1e-3)
    with loop.dtype_policy("off"):
        plain = optimizers.make_optimizer("rmsprop", 1e-3)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert float(scaled.scale_loss(tf.constant(1.0))) > 1.0
    assert not isinstance(plain, keras.optimizers.LossScaleOptimizer)
    assert float(plain.scale_loss(tf.constant(1.0))) == 1.0
