"""A stand-in for tensorflow_model_server for tests on machines without the binary: serves
SavedModels over TF Serving's REST API (JSON row format) and its gRPC PredictionService,
loading them with tf.saved_model.load and calling their signatures with the request's
tensors, as the server does. Errors are answered as the server answers them: HTTP 400/404
with {"error": ...}, gRPC INVALID_ARGUMENT/NOT_FOUND."""

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")


class _NotFound(Exception):
    pass


class _Invalid(Exception):
    pass


class Models:
    """{name: SavedModel directory} -> predict(name, signature, {input: array})."""

    def __init__(self, directories):
        self.loaded = {name: tf.saved_model.load(path) for name, path in directories.items()}

    def predict(self, name, signature, inputs):
        if name not in self.loaded:
            raise _NotFound(f"Servable not found for request: Latest({name})")
        signatures = self.loaded[name].signatures
        if signature not in signatures:
            raise _NotFound(f"Serving signature name: \"{signature}\" not found in signature def")
        fn = signatures[signature]
        specs = fn.structured_input_signature[1]
        tensors = {}
        for key, spec in specs.items():
            if key not in inputs:
                raise _Invalid(f"input '{key}' missing from the request")
            value = np.asarray(inputs[key])
            if spec.dtype == tf.uint8 and (value.dtype.kind not in "iu" or value.min() < 0
                                           or value.max() > 255):
                raise _Invalid(f"{key}: expected {spec.dtype.name} values, got {value.dtype}")
            if not spec.shape.is_compatible_with(value.shape):
                raise _Invalid(f"{key}: shape {list(value.shape)} does not match the "
                               f"signature's {spec.shape}")
            tensors[key] = tf.constant(value, spec.dtype)
        try:
            return {k: v.numpy() for k, v in fn(**tensors).items()}
        except tf.errors.InvalidArgumentError as e:
            raise _Invalid(e.message) from None


def _rest_handler(models):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, code, payload):
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            match = _PATH.match(self.path)
            if not match:
                return self._answer(404, {"error": f"Malformed request: POST {self.path}"})
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = request["instances"]
            inputs = ({k: [row[k] for row in rows] for k in rows[0]}
                      if rows and isinstance(rows[0], dict) else {"images": rows})
            try:
                out = models.predict(match.group(1),
                                     request.get("signature_name", "serving_default"), inputs)
            except _NotFound as e:
                return self._answer(404, {"error": str(e)})
            except _Invalid as e:
                return self._answer(400, {"error": str(e)})
            keys = sorted(out)
            predictions = [{k: out[k][i].tolist() for k in keys}
                           for i in range(len(out[keys[0]]))]
            return self._answer(200, {"predictions": predictions})

    return Handler


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models):
        self.models = models

    def Predict(self, request, context):
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        try:
            out = self.models.predict(request.model_spec.name,
                                      request.model_spec.signature_name or "serving_default",
                                      inputs)
        except _NotFound as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except _Invalid as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response = predict_pb2.PredictResponse()
        for key, value in out.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


class FakeServer:
    """Starts REST and gRPC endpoints on loopback ports; `.rest` and `.grpc` are host:port."""

    def __init__(self, directories):
        models = Models(directories)
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(models))
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _Servicer(models), self.grpc_server)
        port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.grpc_server.start()
        self.rest = f"127.0.0.1:{self.http.server_address[1]}"
        self.grpc = f"127.0.0.1:{port}"

    def stop(self):
        self.http.shutdown()
        self.grpc_server.stop(0)
