"""Time feature extraction over all of Flickr8k's split images into a fresh cache.

Loads the train, dev and test splits from the config's data root, builds the encoder with the
config's weights (CAPTIONBOT_WEIGHTS_DIR applies) and extracts every image's features into a
temporary cache folder, deleted afterwards, exactly as ``captionbot train`` does on its first
run. Prints one JSON object. Run from the repository root:

    CAPTIONBOT_WEIGHTS_DIR=../shared/weights python benchmarks/extract_features.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML merged over config.yaml")
    parser.add_argument("--encoder", default="squeezenet", help="encoder name")
    parser.add_argument("--limit-images", type=int, default=None, help="N images per split")
    args = parser.parse_args()

    from captioner.config import load_config
    from training.features import features_for
    from training.flickr8k import DatasetPaths, load_splits

    config = load_config(args.config)
    splits = load_splits(DatasetPaths.from_config(config.data), limit_images=args.limit_images)
    images = {
        image: split.image_path(image) for split in splits.values() for image in split.images
    }

    with tempfile.TemporaryDirectory() as cache_dir:
        started = time.perf_counter()
        cpu_started = time.process_time()
        store = features_for(images, config, args.encoder, Path(cache_dir), progress=True)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started

    print(
        json.dumps(
            {
                "bench": "extract_features",
                "encoder": args.encoder,
                "images": len(images),
                "failed": len(store.failed),
                "batch_size": config.encoder.batch_size,
                "seconds": round(seconds, 1),
                "cpu_seconds": round(cpu_seconds, 1),
                "images_per_s": round(len(images) / seconds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
