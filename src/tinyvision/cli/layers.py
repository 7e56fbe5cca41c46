"""`tinyvision layers FILE [IMAGES...]`: where to cut a model file (`model.cut_at`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from tinyvision.cli.common import console, user_errors


@user_errors
def layers_command(
    model_file: Path = typer.Argument(..., help="A Keras model file (.keras, or .h5 from Keras 2)."),
    images: Optional[list[Path]] = typer.Argument(
        None, help="Some of your own images or folders of them: each layer's share of zero "
                   "activations on them shows which features are alive.", show_default=False),
    samples: int = typer.Option(32, min=1, max=512, help="Images measured (a seeded sample)."),
    all_layers: bool = typer.Option(False, "--all", help="List every layer, not only those with "
                                    "a feature map (the places model.cut_at accepts)."),
    trust_model_code: bool = typer.Option(False, "--trust-model-code",
                                          help="Load a file with Lambda layers (runs its code)."),
) -> None:
    """List a model file's layers with their output shapes and, on your images, how much of each
    feature map is zero (or negative, which a ReLU zeros); suggest a live one for model.cut_at.

    Features of a file trained for another task often die in its last blocks (almost every
    activation zero on your images): cut before them, or train from scratch.
    """
    import numpy as np

    from tinyvision.models.layers import DEAD_SHARE, describe_layers, suggest_cut
    from tinyvision.run.predict import collect_images

    paths = collect_images(images) if images else []
    if len(paths) > samples:
        rng = np.random.default_rng(0)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), samples, replace=False))]
    facts = describe_layers(model_file, paths, allow_unsafe_code=trust_model_code)
    measured = bool(paths)
    table = Table(title=f"{model_file.name}: {len(facts)} layers" +
                  (f", activations on {len(paths)} of your images" if measured else ""))
    for header in ("#", "layer", "type", "output", "params") + (("<= 0", "mean |x|")
                                                                  if measured else ()):
        table.add_column(header, justify="left" if header in ("layer", "type") else "right")
    for fact in facts:
        if not (all_layers or fact.feature_map):
            continue
        row = [str(fact.index), escape(fact.name), fact.kind,
               "x".join("?" if d is None else str(d) for d in fact.shape), f"{fact.params:,}"]
        if measured:
            zeros = f"{fact.zero_share:.0%}"
            row += [f"[red]{zeros}[/]" if fact.dead else zeros, f"{fact.mean_abs:.3g}"]
        table.add_row(*row)
    console.print(table)
    if not measured:
        console.print("Give some of your images (files or folders) to see which feature maps are "
                      "alive on them.")
        return
    dead = [f for f in facts if f.feature_map and f.dead]
    if dead:
        console.print(f"{len(dead)} feature map(s) are at least {DEAD_SHARE:.0%} zeros (or "
                      f"values a ReLU zeros) on your images (red), from {escape(dead[0].name)} "
                      "on: features the file's own task needed, not yours.")
    cut = suggest_cut(facts)
    if cut is None:
        console.print("No feature map is mostly alive on your images: train from scratch "
                      "(model.weights: none).")
    else:
        console.print(f"suggested: model.cut_at: {escape(cut.name)}  (the deepest live feature "
                      f"map before any dead one: {cut.zero_share:.0%} of it <= 0)")
