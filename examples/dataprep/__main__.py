"""``python -m examples.dataprep OUT.mp4 [--frames N] [--size WxH] [--objects K] [--run STORE]``.

Writes the synthetic test clip (moving colored rectangles over a textured background)
that the tests and the README use as input; with ``--run STORE``, also runs the pipeline
on it in this process (checkpoints and dataset under STORE) and prints the dataset's size
and any warning, such as an empty dataset.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .video import PREFERRED_CODECS, SPRITES, make_test_clip, probe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.dataprep", description="Write the synthetic test clip."
    )
    parser.add_argument("path", help="the .mp4 file to write")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT, both even")
    parser.add_argument("--seed", type=int, default=0, help="the background texture's seed")
    parser.add_argument(
        "--objects", type=int, default=len(SPRITES), help="moving rectangles, 0 to 3"
    )
    parser.add_argument("--codec", default=None, help=f"default: first of {PREFERRED_CODECS}")
    parser.add_argument(
        "--run",
        metavar="STORE",
        default=None,
        help="then run the pipeline on the clip, in process, with this storage (a folder "
        "or URL); the dataset goes to STORE/datasets/CLIP_NAME/",
    )
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    path = make_test_clip(
        args.path,
        args.frames,
        (width, height),
        seed=args.seed,
        objects=args.objects,
        codec=args.codec,
    )
    info = probe(path)
    print(f"{path}: {info.frames} frames of {info.width}x{info.height}, codec {info.codec}")
    if args.run is None:
        return 0
    return run_clip(path, args.run)


def run_clip(path: Path, storage: str) -> int:
    """Run the pipeline on ``path``; print the dataset and its warnings. 0 if it completed."""
    from .pipeline import build, logger

    logger.setLevel(logging.ERROR)  # its warnings are printed below, once
    result = build(storage).run({"video_path": str(path), "video_guid": path.stem})
    if result["status"] != "completed":
        for message in result["errors"]:
            print(f"error: {message}", file=sys.stderr)
        return 1
    context = result["context"]
    written = context["dataset"]
    print(
        f"dataset: {written['file_count']} files ({written['train_files']} train, "
        f"{written['val_files']} val) at {written['url']}"
    )
    for message in [*result.get("warnings", []), *context.get("dataset_warnings", [])]:
        print(f"warning: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
