"""``python -m examples.dataprep OUT.mp4 [--frames N] [--size WxH] [--codec C]``.

Writes the synthetic test clip (moving colored rectangles over a textured background)
that the tests and the README use as input.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .video import PREFERRED_CODECS, make_test_clip, probe


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m examples.dataprep", description="Write the synthetic test clip."
    )
    parser.add_argument("path", help="the .mp4 file to write")
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--size", default="160x120", help="WIDTHxHEIGHT, both even")
    parser.add_argument("--seed", type=int, default=0, help="the background texture's seed")
    parser.add_argument("--codec", default=None, help=f"default: first of {PREFERRED_CODECS}")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    path = make_test_clip(args.path, args.frames, (width, height), seed=args.seed, codec=args.codec)
    info = probe(path)
    print(f"{path}: {info.frames} frames of {info.width}x{info.height}, codec {info.codec}")


if __name__ == "__main__":
    main()
