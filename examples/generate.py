"""Generate kiln's example models and their calibration/validation samples.

    python examples/generate.py OUT_DIR [--size full|tiny] [--seed N] [--only NAME ...]

Writes OUT_DIR/<name>/model.onnx, OUT_DIR/<name>/calibration/*.npz and
OUT_DIR/<name>/validation/*.npz for ctr, cnn and ranker. Same arguments, same model bytes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kiln.errors import KilnError
from kiln.examples import EXAMPLES, SIZES, generate_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the examples into")
    parser.add_argument("--size", choices=SIZES, default="full", help="model size (default: full)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default: 0)")
    parser.add_argument("--only", nargs="+", choices=list(EXAMPLES), help="generate only these examples")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        generated = generate_all(args.out_dir, size=args.size, seed=args.seed, names=args.only)
    except KilnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for item in generated.values():
        calibration = len(list(item.calibration.glob("*.npz")))
        validation = len(list(item.validation.glob("*.npz")))
        megabytes = item.model.stat().st_size / 1e6
        print(
            f"{item.name:<7} {item.model}  {megabytes:6.1f} MB  "
            f"calibration {calibration} file(s)  validation {validation} file(s)"
        )
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
