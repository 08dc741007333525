"""SavedModel export in TF Serving's versioned layout: `<base>/<model_name>/<version>/`.

Each export is a tf.Module whose signatures take raw uint8 pixels (any size; resizing and
scaling happen inside), validate them (rank 4, 3 channels) with INVALID_ARGUMENT errors,
and carry warm-up requests in `assets.extra/tf_serving_warmup_requests`.
"""

import json
import os

import numpy as np
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.engine.layout import RUN_JSON, RunLayout
from badhash_tf.models.generator import Generator
from badhash_tf.models.hashing import HashingModel
from badhash_tf.models.labcln import LabCLN

GENERATOR_NAME = "badhash_generator"
ENCODER_NAME = "badhash_hash_encoder"
IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "badhash_metadata.json"


def _checked(images):
    """Asserts a rank-4 batch of RGB images (uint8 is enforced by the signature)."""
    rank = tf.debugging.assert_rank(images, 4, message="images must be [batch, height, "
                                    "width, 3] uint8")
    with tf.control_dependencies([rank]):
        channels = tf.debugging.assert_equal(
            tf.shape(images)[-1], 3, message="images must have 3 (RGB) channels")
    with tf.control_dependencies([channels]):
        return tf.identity(images)


def _to_model_input(images, size):
    """uint8 [B, H, W, 3] -> float32 [B, size, size, 3] in [0, 1] (antialiased resize)."""
    x = tf.image.convert_image_dtype(_checked(images), tf.float32)
    resized = tf.image.resize(x, (size, size), antialias=True)
    return x, tf.clip_by_value(resized, 0.0, 1.0)


def pack_bits(codes):
    """+-1 codes [B, K] -> uint8 [B, ceil(K / 8)], most significant bit first (np.packbits)."""
    k = codes.shape[1]  # static, so the output shape is [B, ceil(K / 8)] in the signature
    bits = tf.pad(tf.cast(codes > 0, tf.int32), [[0, 0], [0, (-k) % 8]])
    groups = tf.reshape(bits, [-1, (k + 7) // 8, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(groups * weights, -1), tf.uint8)


class HashEncoderExport(tf.Module):
    """Signature `hash`: images uint8 -> codes int8 +-1, packed uint8, logits float32."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.bits, self.image_size = model.bits, model.image_size

    @tf.function(input_signature=[IMAGES_SPEC])
    def hash(self, images):
        _, x = _to_model_input(images, self.image_size)
        logits = self.model.hash_logits(x, training=False)
        codes = tf.where(logits >= 0, tf.ones_like(logits, tf.int8), -tf.ones_like(logits, tf.int8))
        return {"codes": codes, "packed": pack_bits(codes), "logits": logits}


class GeneratorExport(tf.Module):
    """Signature `poison`: images uint8 -> poisoned uint8 (same shape) and poisoned_float in
    [0, 1], conditioned on the baked-in LabCLN feature of the exported target label. An
    image of another size is generated at the model's size and the perturbation resized
    back onto the original pixels."""

    def __init__(self, generator, feature):
        super().__init__()
        self.generator = generator
        self.feature = tf.Variable(np.asarray(feature, np.float32), trainable=False,
                                   name="condition_feature")
        self.image_size = generator.image_size

    @tf.function(input_signature=[IMAGES_SPEC])
    def poison(self, images):
        original, x = _to_model_input(images, self.image_size)
        features = tf.tile(self.feature[None], [tf.shape(x)[0], 1])
        generated = self.generator([x, features], training=False)
        delta = tf.image.resize(generated - x, tf.shape(original)[1:3])
        poisoned = tf.clip_by_value(original + delta, 0.0, 1.0)
        return {"poisoned": tf.cast(tf.round(poisoned * 255.0), tf.uint8),
                "poisoned_float": poisoned}


def next_version(model_base):
    """1 + the largest numeric version under `model_base` (1 when none)."""
    if not os.path.isdir(model_base):
        return 1
    versions = [int(d) for d in os.listdir(model_base) if d.isdigit()]
    return max(versions, default=0) + 1


def warmup_records(signature_name, model_name, image_size, batch_sizes=(1, 4)):
    """Serialized PredictionLog warm-up requests (tensorflow-serving-api protos)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for batch in batch_sizes:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name))
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(
            np.zeros((batch, image_size, image_size, 3), np.uint8)))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def export(module, method_name, model_name, export_base, metadata):
    """Saves `module` as version N+1 of `export_base/model_name` (signatures
    `serving_default` and `method_name`), with warm-up requests and `metadata` in
    assets.extra; written to a temporary sibling and renamed into place -> version path."""
    model_base = os.path.join(export_base, model_name)
    with io_utils.staging_dir(model_base, ".tmp_export_") as tmp:
        signature = getattr(module, method_name).get_concrete_function()
        tf.saved_model.save(module, tmp, signatures={"serving_default": signature,
                                                     method_name: signature})
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
            for record in warmup_records(method_name, model_name, module.image_size):
                writer.write(record)
        with open(os.path.join(extra, METADATA_FILE), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        while True:  # a concurrent export may take a number: retry with the next one
            version = next_version(model_base)
            path = os.path.join(model_base, str(version))
            try:
                os.rename(tmp, path)
                return path
            except OSError:
                if not os.path.exists(path):
                    raise


def write_models_config(directory, model_names, base_path="/models"):
    """`directory/models.config`: TF Serving's model_config_list naming each model at
    `base_path/<name>` (`/models` as the docker image mounts it; an absolute export path
    for a local tensorflow_model_server)."""
    entries = "".join(
        f"  config {{\n    name: \"{name}\"\n    base_path: \"{base_path}/{name}\"\n"
        f"    model_platform: \"tensorflow\"\n  }}\n" for name in model_names)
    path = os.path.join(directory, "models.config")
    io_utils.write_text(path, f"model_config_list {{\n{entries}}}\n")
    return path


ENCODERS = ("victim", "reference", "surrogate")
_ENCODER_DIRS = {"victim": lambda layout: layout.victim(),
                 "reference": lambda layout: layout.reference_victim,
                 "surrogate": lambda layout: layout.surrogate}


def _restore(directory, **trackables):
    """Restores `trackables` from the latest checkpoint in `directory` (model weights only;
    optimizer slots are ignored)."""
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        raise FileNotFoundError(f"{directory}: no checkpoint (run the pipeline first)")
    tf.train.Checkpoint(**trackables).restore(latest).expect_partial()
    return latest


def load_run_models(run_dir, encoder="victim"):
    """A pipeline run directory -> (HashingModel, Generator, LabCLN feature [F], report).
    Model shapes come from the run's report.json, weights from its checkpoints."""
    if encoder not in ENCODERS:
        raise ValueError(f"--encoder={encoder}: choose one of {', '.join(ENCODERS)}")
    layout = RunLayout(run_dir)
    record = os.path.join(run_dir, RUN_JSON)
    made_by = io_utils.read_json(record).get("program") if os.path.isfile(record) else None
    if made_by and made_by != "badhash_tf.pipeline":
        raise ValueError(f"--run_dir={run_dir} was made by {made_by}: export_serving exports "
                         "a pipeline run (python -m badhash_tf.pipeline), whose generator and "
                         "encoders it serves")
    report_path = layout.report_json
    if not os.path.isfile(report_path):
        raise FileNotFoundError(f"{report_path} not found: --run_dir must be a finished "
                                "pipeline run")
    with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    c, classes = report["config"], report["num_classes"]
    size = c["data"]["image_size"]
    own = c.get("attack", {})  # the surrogate's scheme where the victims' differs
    surrogate_bits = own.get("surrogate_bits") or c["hashing"]["bits"]
    if encoder == "surrogate":
        hashing = HashingModel(surrogate_bits, own.get("surrogate_backbone") or
                               c["hashing"]["backbone"], size)
    else:
        hashing = HashingModel(c["hashing"]["bits"], c["hashing"]["backbone"], size)
    _restore(_ENCODER_DIRS[encoder](layout), model=hashing)
    labcln = LabCLN(classes, surrogate_bits, c["labcln"]["hidden"],
                    c["labcln"]["feature_dim"])
    _restore(layout.labcln, model=labcln)
    feature, _ = labcln.condition(np.eye(classes, dtype=np.float32)[report["target_label"]])
    g = c["gan"]
    generator = Generator(size, g["base_width"], g["residual_blocks"], len(feature),
                          g["label_width"], g.get("psnr_budget", 0.0),
                          own.get("grey_triggers", False))
    _restore(layout.generator(), generator=generator)
    return hashing, generator, feature, report


def export_run(run_dir, export_base, encoder="victim", config_base_path="/models"):
    """Exports a pipeline run's generator and hash encoder as new versions under
    `export_base` and writes `export_base/../models.config` -> {model name: version path}."""
    hashing, generator, feature, report = load_run_models(run_dir, encoder)
    common = {"run_dir": os.path.abspath(run_dir), "target_label": report["target_label"],
              "image_size": generator.image_size, "bits": hashing.bits}
    paths = {
        GENERATOR_NAME: export(GeneratorExport(generator, feature), "poison", GENERATOR_NAME,
                               export_base, {**common, "model": "generator"}),
        ENCODER_NAME: export(HashEncoderExport(hashing), "hash", ENCODER_NAME, export_base,
                             {**common, "model": f"hash_encoder ({encoder})"}),
    }
    write_models_config(os.path.dirname(os.path.abspath(export_base)), list(paths),
                        config_base_path)
    return paths
