"""``kgraft serve DIR``: serve the partitions of an export (from ``--from-partition`` on) over the
KServe v2 inference protocol, through KServe's own server (see :mod:`kgraft.backends.serve.server`).

DIR is what ``kgraft.export_onnx``/``kgraft split --onnx`` or ``kgraft.export_triton`` wrote.
When the server accepts connections, one line ``serving <models> at <url>`` goes to stdout;
SIGINT (Ctrl-C) or SIGTERM stops it gracefully (exit 0).
"""

from __future__ import annotations

import click

from .app import main

__all__ = ["serve"]


@main.command()
@click.argument("directory", metavar="DIR", type=click.Path(exists=True, file_okay=True, dir_okay=True))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="HTTP port.")
@click.option("--from-partition", "from_partition", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="K", help="Serve partitions K.. (the edge runs 0..K-1).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=None,
              help="Also serve the v2 gRPC protocol on this port (SplitRunner(..., protocol='grpc')).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime threads per partition (default: one per core).")
@click.option("-v", "--verbose", is_flag=True, help="KServe's and uvicorn's own logging (requests, start-up).")
def serve(directory, host, port, from_partition, grpc_port, threads, verbose):
    """Serve the partitions of an ONNX export or Triton repository over the KServe v2 protocol.

    Models: <model>_part<i> for each partition i >= K, and <model>_from<K> (<model> when K is 0)
    running them all in one request; a kgraft.SplitRunner(DIR, url, edge=K) on the edge finds
    them. Health, readiness and metadata endpoints are KServe's (/v2/health/ready, /v2/models/<m>).

    \b
    Examples:
      kgraft serve parts/ --from-partition 1 --port 8000
      kgraft serve parts/ --from-partition 1 --port 8000 --grpc-port 8001 --threads 1
      kgraft serve triton-repo/ --host 0.0.0.0
    """
    from ..backends.serve.server import serve as run_server

    def ready(url, models):
        also = f" and grpc://{host}:{grpc_port}" if grpc_port is not None else ""
        click.echo(f"serving {', '.join(models)} at {url}{also}", nl=True)

    run_server(directory, host=host, port=port, from_partition=from_partition, on_ready=ready, verbose=verbose,
               threads=threads, grpc_port=grpc_port)
    click.echo("kgraft serve: stopped", err=True)
