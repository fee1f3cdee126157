"""``koel train CONFIG [--set key=value ...]``: the training command (torchrun-compatible)."""

from __future__ import annotations

import argparse
import logging
import sys


def cmd_train(args: argparse.Namespace) -> int:
    from koel.train.config import load_config
    from koel.train.trainer import Trainer, train

    cfg = load_config(args.config, args.set or [])
    if args.print_config:
        print(cfg.to_json())
        return 0
    if args.export_only:
        trainer = Trainer(cfg)
        try:
            path = trainer.export()
        finally:
            trainer.close()
        if path is not None:
            print(f"exported step {trainer.step} to {path}", file=sys.stderr)
        return 0
    result = train(cfg)
    if result.export_dir is not None:
        print(
            f"trained to step {result.step} in {result.seconds:.0f} s; exported to {result.export_dir}",
            file=sys.stderr,
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a model from a config (also under torchrun for several GPUs)",
        description="Train or fine-tune Kokoro from a YAML/JSON config. Resumes from the newest checkpoint in "
        "run.output_dir. Several GPUs: torchrun --nproc_per_node N -m koel train CONFIG.",
    )
    p.add_argument("config", help="YAML or JSON training config (see configs/)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. --set optim.lr=2e-4"
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--export-only", action="store_true", help="export the newest checkpoint without training")
    p.set_defaults(func=cmd_train)


def main(argv: list[str] | None = None) -> int:
    """``python -m koel.train.cli CONFIG ...`` (what torchrun launches)."""
    parser = argparse.ArgumentParser(prog="koel-train")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
