"""Calling the exported models on TF Serving, over REST (`/v1/models/<name>:predict`, JSON
row format) and gRPC (tensorflow-serving-api's PredictionService)."""

import http.client
import json
import os
import urllib.error
import urllib.request

import numpy as np


class ServingError(RuntimeError):
    """The server is unreachable or answered an error (the message says which)."""


def rest_url(server, model, version=None):
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    return f"http://{server}{path}"


def checked_images(images):
    """Both protocols send only uint8 [B, H, W, 3]: a float image would be cast to black and
    300 wrap to 44. Raises ValueError naming what was given."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:  # (channels: the signature checks)
        raise ValueError(f"images must be uint8 [batch, height, width, 3] in 0..255, got "
                         f"{images.dtype} {images.shape}")
    return images


def rest_request_body(images, signature="serving_default"):
    """uint8 [B, H, W, 3] -> TF Serving's JSON row-format request body (bytes)."""
    images = checked_images(images)
    return json.dumps({"signature_name": signature,
                       "instances": [{"images": image.tolist()} for image in images]}).encode()


def parse_rest_response(body):
    """TF Serving's JSON `predictions` (a list of per-row dicts, or of values when the
    signature has one output) -> {output name: np.ndarray [B, ...]}."""
    data = json.loads(body)
    if "error" in data:
        raise ServingError(f"server answered an error: {data['error']}")
    if "predictions" not in data:
        raise ServingError(f"unexpected response without 'predictions': {str(data)[:200]}")
    rows = data["predictions"]
    if rows and isinstance(rows[0], dict):
        return {key: np.asarray([row[key] for row in rows]) for key in rows[0]}
    return {"output": np.asarray(rows)}


def rest_predict(server, model, images, signature="serving_default", version=None,
                 timeout=60.0):
    """POSTs `images` to TF Serving's REST API -> {output name: np.ndarray}."""
    url = rest_url(server, model, version)
    request = urllib.request.Request(url, data=rest_request_body(images, signature),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return parse_rest_response(response.read())
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        try:
            detail = json.loads(detail).get("error", detail)
        except ValueError:
            pass
        raise ServingError(f"{url}: server answered HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise ServingError(f"{url}: cannot reach the server ({reason})") from None
    except (http.client.HTTPException, ConnectionError) as e:  # e.g. a gRPC (HTTP/2) port
        raise ServingError(f"{url}: the server did not answer HTTP/1.1 ({type(e).__name__}): "
                           "is this TF Serving's gRPC port (8500 by default)? Give the REST "
                           "port (8501) or --protocol=grpc") from None


def grpc_request(model, images, signature="serving_default", version=None):
    """-> a PredictRequest for `images` uint8 [B, H, W, 3]."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version:
        request.model_spec.version.value = int(version)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(checked_images(images)))
    return request


def parse_grpc_response(response):
    """PredictResponse -> {output name: np.ndarray}."""
    import tensorflow as tf

    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def grpc_predict(server, model, images, signature="serving_default", version=None,
                 timeout=60.0):
    """Calls PredictionService/Predict on `server` -> {output name: np.ndarray}."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    options = [("grpc.max_send_message_length", 256 << 20),
               ("grpc.max_receive_message_length", 256 << 20)]
    with grpc.insecure_channel(server, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(grpc_request(model, images, signature, version),
                                    timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                hint = ("; is this TF Serving's REST port (8501 by default)? Give the gRPC "
                        "port (8500) or --protocol=rest") if "http" in (
                            e.details() or "").lower() else ""
                raise ServingError(f"{server}: cannot reach the server "
                                   f"({e.code().name}: {e.details()}){hint}") from None
            raise ServingError(f"{server}: server answered {e.code().name}: "
                               f"{e.details()}") from None
    return parse_grpc_response(response)


def predict(protocol, server, model, images, signature="serving_default", version=None,
            timeout=60.0):
    """`protocol` 'rest' | 'grpc' -> {output name: np.ndarray}."""
    if protocol == "rest":
        return rest_predict(server, model, images, signature, version, timeout)
    if protocol == "grpc":
        return grpc_predict(server, model, images, signature, version, timeout)
    raise ValueError(f"--protocol={protocol}: choose rest or grpc")


def output_names(paths):
    """One output file name per input, <stem>_poisoned.png, with -2, -3 ... added where
    inputs share a base name (a/x.png, b/x.png), so none overwrites another."""
    names, used = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] + "_poisoned"
        name, n = f"{stem}.png", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        names.append(name)
    return names
