"""The ``kgraft`` command line."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """kgraft: cut, inspect and rewire trained Keras models."""


@main.command()
def demo() -> None:
    """Run the main job on a built-in model (no downloads)."""
    import keras

    import kgraft

    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    graph = kgraft.lower(model)
    click.echo(f"lowered {model.name}: {len(graph)} call sites, {len(graph.layers)} layers")
