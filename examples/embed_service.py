"""Embedding lrp-onnx in a service you already have.

This is a stand-in for an existing inference service: a plain standard-library HTTP
server with one route, ``POST /classify``, that takes spectrograms as JSON and answers
with labels. Four lines make it explain its decisions too:

1. one :class:`~lrp_onnx.runtime.Explainer` per model, built at start-up and shared by
   every request thread (onnxruntime sessions are thread-safe; the Explainer keeps no
   per-call state);
2. explicit session options: intra-op threads, memory arena, execution providers;
3. ``predict`` (forward pass only) for requests that need no explanation;
4. ``explain`` on the whole batch at once: one session run gives logits, the explained
   classes and the relevance of every sample.

Run it::

    python examples/embed_service.py models/gender_alexnet.onnx --port 8080
    curl -s localhost:8080/classify -d '{"spectrograms": [...], "explain": true}'

Already on FastAPI? Mount the whole lrp-onnx service (endpoints, viewer page, batching)
under a prefix of your app instead::

    from lrp_onnx.service.app import create_app
    app.mount("/lrp", create_app({"gender": "models/gender_alexnet.onnx"}))

Or, for recordings, turn a WAV into the model input with the model's own feature spec::

    from lrp_onnx.audio.features import feature_spec_from_json
    spec = explainer.metadata.feature_spec()
    x = spec.from_file("recording.wav")[None]            # (1, 1, 227, 227)
"""
from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from lrp_onnx.lrp_graph.errors import LRPError
from lrp_onnx.runtime import Explainer, default_providers, session_options

MAX_BODY = 32 * 2**20


def make_service(model_path: str, host: str = "127.0.0.1", port: int = 8080, threads: int | None = None):
    """The existing service, now with one shared Explainer."""
    explainer = Explainer(
        model_path,
        composite="epsilon-plus",                               # LRP rules: a preset or a file
        options=session_options(threads=threads, arena=True),  # intra-op threads, memory arena
        providers=default_providers(),                          # CUDA when available, else CPU
        batch_size=32,                                          # most samples per session run
    )
    labels = explainer.labels or [str(k) for k in range(explainer.num_classes or 0)]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            if self.path != "/classify":
                return self._reply(404, {"error": "unknown route"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply(413, {"error": "body too large"})
            try:
                request = json.loads(self.rfile.read(length))
                x = np.asarray(request["spectrograms"], dtype=np.float32)
                if request.get("explain"):
                    e = explainer.explain(x)                    # the whole batch in one call
                    logits, relevance = e.logits, e.relevance
                else:
                    logits, relevance = explainer.predict(x), None  # no relevance pass
            except LRPError as exc:                             # wrong shape, NaN, bad target: one line
                return self._reply(400, {"error": str(exc)})
            except (ValueError, KeyError, TypeError) as exc:
                return self._reply(400, {"error": f"bad request: {exc}"})
            answer = {"labels": [labels[k] if k < len(labels) else str(k) for k in logits.argmax(axis=1)],
                      "logits": logits.tolist()}
            if relevance is not None:
                answer["relevance"] = relevance.tolist()
            self._reply(200, answer)

        def _reply(self, status: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # keep the example quiet
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    service = make_service(args.model, args.host, args.port, args.threads)
    print(f"listening on http://{args.host}:{service.server_address[1]}/classify")
    try:
        service.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
