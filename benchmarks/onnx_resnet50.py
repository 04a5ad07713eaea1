"""Compare captionbot's ResNet50 encode time with ONNX Runtime running the same model.

Builds the `resnet50` encoder (random weights: the time does not depend on their values),
exports that very Keras model to ONNX with Keras' own exporter, checks that ONNX Runtime gives
the same features, then times batch-1 encodes on the same image three ways: ONNX Runtime,
captionbot's `encode` (a frozen graph), and the Keras model traced as is, unfrozen. Prints
JSON lines. Needs tf2onnx, onnx and onnxruntime, which are not project dependencies; install
them into a virtual environment that sees the project's packages (see the README):

    python3 -m venv --system-site-packages /tmp/ortenv
    /tmp/ortenv/bin/pip install --no-deps tf2onnx onnx onnxruntime
    /tmp/ortenv/bin/python benchmarks/onnx_resnet50.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def interleaved_medians(
    runs: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 3
) -> dict[str, float]:
    """Median ms per call of each method, timed in alternating rounds.

    Alternating keeps a slow spell of a shared machine from landing on one method only.
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(per_round):
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of 10 runs per method")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    from captioner.encoders import build_encoder

    encoder = build_encoder("resnet50", weights="random")
    height, width = encoder.input_size
    image = np.random.default_rng(0).uniform(0, 255, size=(1, height, width, 3))
    batch = encoder.preprocess(image.astype(np.float32))  # (1, 224, 224, 3) caffe-style input

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet50.onnx"
        started = time.perf_counter()
        encoder.model.export(
            str(path),
            format="onnx",
            input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
            verbose=False,
        )
        export_s = time.perf_counter() - started
        # ONNX Runtime's threads spin for a while after each run by default; in one process
        # beside TensorFlow that spinning would hold the cores during TensorFlow's turn.
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    unfrozen = tf.function(
        lambda x: encoder.model(x, training=False),
        input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
    )

    ours = encoder.encode(image.astype(np.float32))  # (1, 2048)
    (theirs,) = session.run(None, {input_name: batch})  # (1, 2048)
    print(
        json.dumps(
            {
                "check": "same_model",
                "export_s": round(export_s, 1),
                "max_abs_diff": float(np.max(np.abs(ours - theirs))),
                "max_abs_feature": float(np.max(np.abs(ours))),
            }
        ),
        flush=True,
    )

    results = interleaved_medians(
        {
            "onnxruntime": lambda: session.run(None, {input_name: batch}),
            "captionbot_encode": lambda: encoder.encode(image.astype(np.float32)),
            "keras_traced_unfrozen": lambda: unfrozen(batch).numpy(),
        },
        rounds=args.rounds,
        per_round=10,
    )
    for method, ms in results.items():
        print(
            json.dumps(
                {
                    "bench": "resnet50_batch1",
                    "method": method,
                    "median_ms": round(ms, 1),
                    "runs": 10 * args.rounds,
                    "ratio_to_onnxruntime": round(ms / results["onnxruntime"], 2),
                    "threads": os.cpu_count(),
                    "onnxruntime_version": ort.__version__,
                    "tensorflow_version": tf.__version__,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
