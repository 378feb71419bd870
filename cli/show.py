"""``kgraft show``: the textual IR of a model."""

from __future__ import annotations

import click

from .app import main
from .options import model_options
from .ui import get_ui, ui_options

__all__ = ["show"]


@main.command()
@model_options
@click.option("--nested/--flat", default=True, show_default=True,
              help="Print nested models as nested regions, or inline them first.")
@ui_options()
def show(model, input_shape, unsafe, nested, quiet):
    """Print the textual IR of MODEL.

    \b
    Examples:
      kgraft show ResNet50 --input-shape 64,64,3
      kgraft show classifier.keras --flat
    """
    from ..passes import inline_nested
    from .models import load_graph

    graph = load_graph(model, input_shape=input_shape, unsafe=unsafe, ui=get_ui(quiet))
    click.echo(str(graph if nested else inline_nested(graph)), nl=False)
