"""`tinyvision search` on the demo shapes with a tight board: wall time, trials run and pruned
(before training, over budget; and early, by the pruner), the Pareto front, and the best against
the config's own model (the first trial).

    python benchmarks/bench_search.py [--trials 8] [--epochs 4] [--per-class 200]
        [--ram-kib 160] [--retrain]

The tight board is an STM32L4R5-like Cortex-M4 at 120 MHz with 2 MB flash and `--ram-kib` RAM,
fed 160x120 RGB565 frames: 96x96 inputs do not fit beside the frame buffer, so the search has to
find a smaller input or width. Run it alone: the machine is shared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from tinyvision.config import validate_config
from tinyvision.data.demo import demo_config, make_shapes_dataset
from tinyvision.run.search import front_table_rows, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--ram-kib", type=int, default=160)
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_shapes_dataset(folder / "data", args.per_class)
        raw = demo_config(folder / "data", folder / "runs", name="bench")
        raw["deploy"] = {"camera": {"format": "rgb565", "width": 160, "height": 120}}
        raw["search"] = {"alphas": [0.25, 0.35], "input_sizes": [48, 64, 96],
                         "trials": args.trials, "epochs": args.epochs, "retrain": args.retrain}
        board = folder / "tight.yaml"
        board.write_text(yaml.safe_dump({
            "name": "tight_m4", "core": "Cortex-M4F", "clock_mhz": 120, "flash_bytes": 2 << 20,
            "ram_bytes": args.ram_kib * 1024, "cycles_per_mac": 4.0}))
        start = time.perf_counter()
        result = search(validate_config(raw), str(board))
        wall = time.perf_counter() - start
    print(f"wall {wall:.0f} s; trials {result.trials}: trained to the end {result.completed}, "
          f"stopped early {result.pruned_early}, pruned before training (over budget) "
          f"{result.pruned_over_budget}")
    print(f"Pareto front (trial, {result.objective}, flash, RAM, ms est., settings):")
    for row in front_table_rows(result):
        print("  " + " | ".join(row))
    own = next((r for r in result.rows or [] if r["trial"] == 0), None)
    if own is None:
        print("the config's own model (96x96) did not fit or did not finish")
    if result.best is not None:
        best = result.best
        print(f"best: trial {best['trial']} val {best['objective']:.4f}, flash "
              f"{best['flash']:,}, RAM {best['ram']:,}, {best['latency_ms']:g} ms (est.)")
    if result.final is not None:
        final = result.final
        print(f"retrained: int8 test accuracy {final['int8'].get('accuracy'):.4f}, "
              f"{final['int8_bytes']:,} bytes, fits {final['fit']['fits']}")


if __name__ == "__main__":
    main()
