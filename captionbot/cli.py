"""The ``captionbot`` command: caption, bench, train, evaluate and serve.

A thin layer over ``captioner``, ``training`` and ``bot``: it parses arguments, loads the
config, and turns expected errors into one-line messages and exit codes, never tracebacks.
Run ``captionbot --help`` for the subcommands.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe for GPUs with the process's stderr pointed at /dev/null.

    TensorFlow's C++ side prints CUDA probing lines before its own log settings apply; they
    mean nothing to a user on a CPU machine. Python errors raised here still reach the user,
    since stderr is restored before they propagate. Later C++ log lines are kept off too
    (level 3), such as oneDNN's note that it falls back to Eigen for boolean tensors: every
    real failure still reaches the user as a Python exception. Set TF_CPP_MIN_LOG_LEVEL=0 to
    see them all.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    logger.info("tensorflow ready gpus=%d", len(gpus))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # httpx logs request URLs at INFO, and python-telegram-bot the API URL at DEBUG: both
    # hold the bot token, so neither level ever reaches the log from them.
    for noisy in ("httpx", "httpcore", "absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("telegram").setLevel(max(logging.INFO, logging.root.level))


def _cmd_caption(args: argparse.Namespace, config) -> int:
    from captioner.images import ImageError
    from captioner.pipeline import Captioner

    captioner = Captioner.from_checkpoint(args.checkpoint, config)
    failures = 0
    for image in args.images:
        started = time.perf_counter()
        (result,) = captioner.caption_batch([image], beam_size=args.beam)
        ms = (time.perf_counter() - started) * 1000
        if isinstance(result, ImageError):
            failures += 1
            if args.json:
                print(json.dumps({"image": image, "error": str(result)}), flush=True)
            else:
                print(f"{image}\terror: {result}", flush=True)
            continue
        if args.json:
            record = {"image": image, "caption": result.text, "ms": round(ms, 1)}
            print(json.dumps(record), flush=True)
        else:
            print(f"{image}\t{result.text}", flush=True)
    return 1 if failures else 0


def _cmd_bench(args: argparse.Namespace, config) -> int:
    from captioner.benchmark import run_benchmark

    for record in run_benchmark(config, encoder_name=args.encoder, weights=args.weights):
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            print("  ".join(f"{k}={v}" for k, v in record.items()), flush=True)
    return 0


def _cmd_train(args: argparse.Namespace, config) -> int:
    from training.train import train

    result = train(
        config,
        encoder_name=args.encoder,
        epochs=args.epochs,
        resume=args.resume,
        run_dir=args.run_dir,
        limit_images=args.limit_images,
    )
    print(f"checkpoint: {result.checkpoint}")
    for name, bleu in result.test_bleu.items():
        figures = " ".join(f"bleu{n}={bleu[f'bleu{n}']:.4f}" for n in range(1, 5))
        print(f"test {name}: {figures}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, config) -> int:
    from training.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(
        args.checkpoint, config, split=args.split, beam_size=args.beam, limit=args.limit
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        figures = " ".join(f"bleu{n}={metrics[f'bleu{n}']:.4f}" for n in range(1, 5))
        print(
            f"split={metrics['split']} images={metrics['images']} beam={metrics['beam']} {figures}"
        )
    return 0


def _cmd_serve(args: argparse.Namespace, config) -> int:
    from bot.app import serve

    serve(config)
    return 0


def _counted(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``least`` (to ``most``), refused with a usage line."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least or (most is not None and value > most):
            wanted = f"from {least} to {most}" if most is not None else f"at least {least}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    from captioner.config import MAX_BEAM_SIZE

    beam = _counted(1, MAX_BEAM_SIZE)
    # --config may stand before or after the subcommand; SUPPRESS keeps the one given.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML file merged over the default config.yaml",
    )
    parser = argparse.ArgumentParser(
        prog="captionbot",
        description="Caption images with an encoder and an LSTM decoder.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    caption = add("caption", "caption image files")
    caption.add_argument("images", nargs="+", help="image files")
    caption.add_argument("--checkpoint", help="checkpoint directory (default: the packaged one)")
    caption.add_argument("--beam", type=beam, default=None, help="beam size (1 = greedy)")
    caption.add_argument("--json", action="store_true", help="one JSON object per line")
    caption.set_defaults(handler=_cmd_caption)

    bench = add("bench", "measure encoding and decoding speed")
    bench.add_argument("--encoder", default=None, help="encoder name (default: config's)")
    bench.add_argument(
        "--weights", default=None, help="imagenet | random | file (default: config's)"
    )
    bench.add_argument("--json", action="store_true", help="JSON lines")
    bench.set_defaults(handler=_cmd_bench)

    train = add("train", "train a decoder on Flickr8k")
    train.add_argument("--encoder", default=None, help="encoder name (default: config's)")
    train.add_argument("--epochs", type=_counted(1), default=None)
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--run-dir", type=Path, default=None, help="default: config's")
    train.add_argument(
        "--limit-images", type=_counted(1), default=None, help="use N images per split"
    )
    train.set_defaults(handler=_cmd_train)

    evaluate = add("evaluate", "BLEU-1..4 of a checkpoint on a split")
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--beam", type=beam, default=1, help="beam size (1 = greedy)")
    evaluate.add_argument("--limit", type=_counted(1), default=None, help="first N images only")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_cmd_evaluate)

    serve = add("serve", "run the Telegram bot (long polling)")
    serve.set_defaults(handler=_cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``captionbot`` console script."""
    args = build_parser().parse_args(argv)

    from captioner.config import ConfigError, load_config

    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as err:
        print(f"captionbot: {err}", file=sys.stderr)
        return 2
    _setup_logging(config.logging.level)
    _import_tensorflow_quietly()

    from captioner.errors import CaptionbotError

    try:
        return args.handler(args, config)
    except CaptionbotError as err:
        print(f"captionbot: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("captionbot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
