"""Time one training epoch over Flickr8k's 30,000 training captions with cached features.

Uses the real training captions and vocabulary, and the feature cache of the chosen encoder
when it holds the training images (random features of the same width otherwise: the epoch's
cost does not depend on their values). Prints one JSON object. Run from the repository root:

    python benchmarks/train_epoch.py [--encoder squeezenet] [--batch-size 64] [--pad-to 34]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FEATURE_DIMS = {"squeezenet": 512, "resnet50": 2048}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML merged over config.yaml")
    parser.add_argument("--encoder", default="squeezenet", choices=sorted(FEATURE_DIMS))
    parser.add_argument("--batch-size", type=int, default=None, help="default: config's")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder")
    parser.add_argument(
        "--pad-to",
        type=int,
        default=None,
        help="pad every batch to this many steps instead of its longest caption (comparison)",
    )
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from captioner.config import load_config
    from captioner.decoder import build_decoder
    from captioner.vocabulary import Vocabulary
    from training.batches import batch_order, encode_captions, max_caption_length
    from training.cleaning import clean_caption
    from training.features import default_cache_dir, find_cached
    from training.flickr8k import DatasetPaths, load_splits
    from training.train import Fitter

    config = load_config(args.config)
    batch_size = args.batch_size or config.training.batch_size
    split = load_splits(DatasetPaths.from_config(config.data), ["train"])["train"]
    images = split.images
    words = [clean_caption(c) for image in images for c in split.captions[image]]
    vocabulary = Vocabulary.build(words, config.vocabulary.max_words)
    max_length = max_caption_length(words, config.vocabulary.max_length_cap)

    # Any complete cache of this encoder that holds the training images will do.
    cache_dir = args.cache_dir or default_cache_dir(config)
    store = None
    for index in sorted(Path(cache_dir).glob(f"{args.encoder}-*.json")):
        weights_id = json.loads(index.read_text())["weights_id"]
        store = find_cached(cache_dir, args.encoder, weights_id, images)
        if store is not None:
            break
    if store is not None:
        images = store.usable(images)
        features = store.get(images)  # (N, D)
        source = f"cache {store.path.name}"
    else:
        rng = np.random.default_rng(0)
        features = rng.random((len(images), FEATURE_DIMS[args.encoder]), dtype=np.float32)
        source = "synthetic (no cache found)"
    captions = encode_captions(split.captions, images, features, vocabulary, max_length)

    keras.utils.set_random_seed(config.training.seed)
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model = build_decoder(
            vocabulary.size,
            features.shape[1],
            config.decoder.embedding_dim,
            config.decoder.units,
            config.decoder.dropout,
        )
        optimizer = keras.optimizers.Adam(config.training.learning_rate)
        optimizer.build(model.trainable_variables)
    fitter = Fitter(model, optimizer, strategy, features.shape[1])

    lengths = captions.lengths
    batches = batch_order(lengths, batch_size, np.random.default_rng([config.training.seed, 1]))
    started = time.perf_counter()
    fitter.fit_epoch(captions, batches[:3], desc="warm-up", progress=False)  # one trace
    warm_up = time.perf_counter() - started

    # --pad-to: every batch padded to the same length, as a plain version does (comparison).
    pad_to = args.pad_to or 0
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    metrics = fitter.fit_epoch(
        captions, batches, desc="epoch", progress=sys.stderr.isatty(), min_steps=pad_to
    )
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started

    steps = sum(max(int(lengths[b].max()), pad_to) * len(b) for b in batches)
    real = int(lengths.sum())
    print(
        json.dumps(
            {
                "benchmark": "train_epoch",
                "captions": len(captions),
                "images": len(images),
                "features": source,
                "vocabulary": vocabulary.size,
                "batch_size": batch_size,
                "batches": len(batches),
                "padding": f"to {args.pad_to}" if args.pad_to else "per batch (bucketed)",
                "padded_steps": steps,
                "real_tokens": real,
                "padding_fraction": round(1 - real / steps, 4),
                "warm_up_seconds": round(warm_up, 1),
                "epoch_seconds": round(seconds, 1),
                "epoch_cpu_seconds": round(cpu_seconds, 1),
                "captions_per_second": round(len(captions) / seconds, 1),
                "train_loss": round(metrics["loss"], 4),
                "cpu_count": os.cpu_count(),
                # Other processes on the machine slow the epoch; the load says how busy it was.
                "load_average_before": round(load_before, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
