"""SavedModel export for TF Serving and the client, against the exported models."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from badhash_tf.models.generator import Generator
from badhash_tf.models.labcln import LabCLN
from badhash_tf.models.hashing import HashingModel
from badhash_tf.serving import client, export
from tests.fake_serving import FakeServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BITS, SIZE, CLASSES, TARGET = 16, 32, 10, 3
GAN = {"base_width": 8, "residual_blocks": 1, "label_width": 16}
LABCLN = {"hidden": 32, "feature_dim": 24}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A pipeline-shaped run directory: report.json and checkpoints of untrained models."""
    root = tmp_path_factory.mktemp("run")
    tf.keras.utils.set_random_seed(0)
    models = {"badhash/victim": {"model": HashingModel(BITS, "small_cnn", SIZE)},
              "reference_victim": {"model": HashingModel(BITS, "small_cnn", SIZE)},
              "surrogate": {"model": HashingModel(BITS, "small_cnn", SIZE)},
              "labcln": {"model": LabCLN(CLASSES, BITS, **LABCLN)},
              "badhash/generator": {"generator": Generator(SIZE, feature_dim=24, **GAN)}}
    for sub, items in models.items():
        tf.train.Checkpoint(**items).save(str(root / sub / "ckpt"))
    report = {"config": {"data": {"image_size": SIZE},
                         "hashing": {"bits": BITS, "backbone": "small_cnn"},
                         "labcln": LABCLN, "gan": GAN},
              "num_classes": CLASSES, "target_label": TARGET}
    (root / "report.json").write_text(json.dumps(report))
    return root


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("export") / "models"
    paths = export.export_run(str(run_dir), str(base))
    return base, paths


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.uint8)


def _keras_outputs(run_dir, images):
    hashing, generator, feature, _ = export.load_run_models(str(run_dir))
    x = images.astype(np.float32) / 255.0
    logits = hashing.hash_logits(x).numpy()
    codes = np.where(logits >= 0, 1, -1).astype(np.int8)
    poisoned = generator([x, np.tile(feature[None], (len(x), 1))]).numpy()
    return codes, poisoned


def test_versioned_layout_warmup_and_config(run_dir, exported):
    base, paths = exported
    assert paths[export.GENERATOR_NAME].endswith(os.path.join("badhash_generator", "1"))
    before = os.path.getmtime(os.path.join(paths[export.ENCODER_NAME], "saved_model.pb"))
    again = export.export_run(str(run_dir), str(base))  # never overwrites: a new version
    assert again[export.ENCODER_NAME].endswith(os.path.join("badhash_hash_encoder", "2"))
    assert os.path.getmtime(os.path.join(paths[export.ENCODER_NAME], "saved_model.pb")) == before
    assert sorted(os.listdir(base / "badhash_hash_encoder")) == ["1", "2"]  # no temp dirs left
    config = (base.parent / "models.config").read_text()
    assert 'name: "badhash_generator"' in config and 'name: "badhash_hash_encoder"' in config
    from tensorflow_serving.apis import prediction_log_pb2
    extra = os.path.join(paths[export.GENERATOR_NAME], "assets.extra")
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
            tf.data.TFRecordDataset(os.path.join(extra, export.WARMUP_FILE))]
    assert [log.predict_log.request.model_spec.signature_name for log in logs] == ["poison"] * 2
    meta = json.loads(open(os.path.join(extra, export.METADATA_FILE)).read())
    assert meta["target_label"] == TARGET and meta["image_size"] == SIZE


def test_fresh_process_loads_exports_and_matches_keras(run_dir, exported, images, tmp_path):
    _, paths = exported
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        images = tf.constant(np.load({str(tmp_path / 'images.npy')!r}))
        enc = tf.saved_model.load({paths[export.ENCODER_NAME]!r}).signatures["serving_default"]
        gen = tf.saved_model.load({paths[export.GENERATOR_NAME]!r}).signatures["poison"]
        e, g = enc(images=images), gen(images=images)
        np.savez({str(tmp_path / 'out.npz')!r}, codes=e["codes"].numpy(),
                 packed=e["packed"].numpy(), poisoned=g["poisoned"].numpy(),
                 poisoned_float=g["poisoned_float"].numpy())
        import sys; assert not any(m.startswith("badhash_tf") for m in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path),
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    codes, poisoned = _keras_outputs(run_dir, images)
    np.testing.assert_array_equal(out["codes"], codes)
    np.testing.assert_array_equal(out["packed"], np.packbits(codes > 0, axis=1))
    assert out["poisoned"].dtype == np.uint8 and out["poisoned"].shape == images.shape
    assert np.abs(out["poisoned"].astype(int) - np.round(poisoned * 255)).max() <= 1
    np.testing.assert_allclose(out["poisoned_float"], poisoned, atol=1 / 255)


def test_saved_model_cli_lists_the_signatures(exported):
    _, paths = exported
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
    show = lambda p: subprocess.run([cli, "show", "--all", "--dir", p], capture_output=True,
                                    text=True, timeout=120).stdout
    gen, enc = show(paths[export.GENERATOR_NAME]), show(paths[export.ENCODER_NAME])
    for text, names in ((gen, ("serving_default", "poison")), (enc, ("serving_default", "hash"))):
        for name in names:
            assert f"signature_def['{name}']" in text
        assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8\n        shape: " \
               "(-1, -1, -1, 3)" in text
    assert "outputs['poisoned'] tensor_info:\n        dtype: DT_UINT8\n        shape: " \
           "(-1, -1, -1, 3)" in gen
    assert "outputs['poisoned_float'] tensor_info:\n        dtype: DT_FLOAT" in gen
    assert f"outputs['codes'] tensor_info:\n        dtype: DT_INT8\n        shape: (-1, {BITS})" \
           in enc
    assert "outputs['packed'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, 2)" in enc
    assert f"outputs['logits'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, {BITS})" \
           in enc


def test_signatures_resize_other_sizes_and_reject_bad_images(exported):
    _, paths = exported
    gen = tf.saved_model.load(paths[export.GENERATOR_NAME]).signatures["poison"]
    big = np.zeros((2, 48, 40, 3), np.uint8)
    assert gen(images=tf.constant(big))["poisoned"].shape == (2, 48, 40, 3)
    check = tf.function(export._checked, input_signature=[tf.TensorSpec(None, tf.uint8)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="must be \\[batch, height"):
        check(tf.zeros((32, 32, 3), tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="3 \\(RGB\\) channels"):
        check(tf.zeros((1, 32, 32, 4), tf.uint8))


def test_pack_bits_matches_numpy():
    codes = np.random.default_rng(1).choice([-1, 1], (5, 20)).astype(np.int8)
    np.testing.assert_array_equal(export.pack_bits(tf.constant(codes)),
                                  np.packbits(codes > 0, axis=1))


@pytest.fixture(scope="module")
def server(exported):
    _, paths = exported
    fake = FakeServer(paths)
    yield fake
    fake.stop()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_round_trip(server, exported, images, protocol):
    _, paths = exported
    address = server.rest if protocol == "rest" else server.grpc
    direct = tf.saved_model.load(paths[export.ENCODER_NAME]).signatures["hash"]
    want = {k: v.numpy() for k, v in direct(images=tf.constant(images)).items()}
    got = client.predict(protocol, address, export.ENCODER_NAME, images, "hash")
    np.testing.assert_array_equal(got["codes"], want["codes"])
    np.testing.assert_array_equal(got["packed"], want["packed"])
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5)
    poisoned = client.predict(protocol, address, export.GENERATOR_NAME, images)
    assert np.asarray(poisoned["poisoned"]).shape == images.shape


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_errors_are_clear(server, images, protocol):
    address = server.rest if protocol == "rest" else server.grpc
    with pytest.raises(client.ServingError, match="not found|NOT_FOUND"):
        client.predict(protocol, address, "no_such_model", images)
    bad = np.zeros((1, 8, 8, 4), np.uint8)
    with pytest.raises(client.ServingError, match="400|INVALID_ARGUMENT"):
        client.predict(protocol, address, export.ENCODER_NAME, bad)
    with pytest.raises(client.ServingError, match="cannot reach"):
        client.predict(protocol, "127.0.0.1:9", export.ENCODER_NAME, images, timeout=5)
    # both protocols refuse what they would mangle: floats (cast to black), 300 (wraps)
    for wrong in (images.astype(np.float32) / 255.0, images.astype(np.int64) + 300):
        with pytest.raises(ValueError, match="must be uint8 .* in 0..255, got"):
            client.predict(protocol, address, export.ENCODER_NAME, wrong)


def test_the_wrong_protocol_for_a_port_is_one_clear_line(server, images):
    with pytest.raises(client.ServingError, match="did not answer HTTP/1.1.*gRPC port"):
        client.predict("rest", server.grpc, export.ENCODER_NAME, images, timeout=10)
    with pytest.raises(client.ServingError, match="REST port"):
        client.predict("grpc", server.rest, export.ENCODER_NAME, images, timeout=10)


def test_inputs_sharing_a_base_name_get_their_own_outputs():
    assert client.output_names(["a/x.png", "b/x.jpg", "x.png", "y.png"]) == [
        "x_poisoned.png", "x_poisoned-2.png", "x_poisoned-3.png", "y_poisoned.png"]


def test_rest_body_is_the_documented_row_format(images):
    body = json.loads(client.rest_request_body(images[:2], "hash"))
    assert body["signature_name"] == "hash" and len(body["instances"]) == 2
    assert np.array_equal(np.asarray(body["instances"][1]["images"]), images[1])
    with pytest.raises(ValueError, match="uint8"):
        client.rest_request_body(images.astype(np.float32))


def test_client_command_line(server, images, tmp_path):
    paths = []
    for i, image in enumerate(images[:2]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(image).save(paths[-1])
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "badhash_tf.serving_client", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    done = run(f"--server={server.rest}", "--model=badhash_generator",
               f"--output_dir={tmp_path / 'out'}", *paths)
    assert done.returncode == 0, done.stderr[-2000:]
    written = np.asarray(Image.open(tmp_path / "out" / "img0_poisoned.png"))
    assert written.shape == (SIZE, SIZE, 3)
    done = run(f"--server={server.grpc}", "--protocol=grpc", "--model=badhash_hash_encoder",
               paths[0])
    assert done.returncode == 0 and done.stdout.startswith(paths[0])
    assert len(done.stdout.split("\t")[1]) == BITS
    done = run("--server=127.0.0.1:9", "--model=badhash_hash_encoder", paths[0])
    assert done.returncode == 1 and "cannot reach the server" in done.stderr


@pytest.mark.skipif(shutil.which("tensorflow_model_server") is None,
                    reason="tensorflow_model_server is not on PATH: the real-server "
                           "integration test needs the TF Serving binary")
def test_real_tensorflow_model_server(exported, images, tmp_path):
    import socket
    import time
    base, _ = exported
    config = tmp_path / "models.config"
    export.write_models_config(str(tmp_path), [export.GENERATOR_NAME, export.ENCODER_NAME],
                               str(base))
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = subprocess.Popen(["tensorflow_model_server", f"--port={ports[0]}",
                             f"--rest_api_port={ports[1]}", f"--model_config_file={config}"])
    try:
        deadline = time.time() + 120
        while True:
            try:
                out = client.predict("rest", f"127.0.0.1:{ports[1]}", export.ENCODER_NAME,
                                     images, "hash")
                break
            except client.ServingError:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        grpc_out = client.predict("grpc", f"127.0.0.1:{ports[0]}", export.ENCODER_NAME, images,
                                  "hash")
        np.testing.assert_array_equal(out["codes"], grpc_out["codes"])
    finally:
        proc.terminate()
        proc.wait(30)
