"""Calling the exported models on TF Serving, over REST (`/v1/models/<name>:predict`, JSON
row format) and gRPC (tensorflow-serving-api's PredictionService)."""

import json
import urllib.error
import urllib.request

import numpy as np


class ServingError(RuntimeError):
    """The server is unreachable or answered an error (the message says which)."""


def rest_url(server, model, version=None):
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    return f"http://{server}{path}"


def rest_request_body(images, signature="serving_default"):
    """uint8 [B, H, W, 3] -> TF Serving's JSON row-format request body (bytes)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [batch, height, width, 3], got {images.dtype} "
                         f"{images.shape}")
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
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise ServingError(f"{url}: cannot reach the server ({reason})") from None


def grpc_request(model, images, signature="serving_default", version=None):
    """-> a PredictRequest for `images` uint8 [B, H, W, 3]."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version:
        request.model_spec.version.value = int(version)
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(images, np.uint8)))
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
                raise ServingError(f"{server}: cannot reach the server "
                                   f"({e.code().name}: {e.details()})") from None
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
