"""``cipherspark cluster``: start, inspect and stop a local Spark standalone cluster."""

from __future__ import annotations

from typing import Annotated

import typer

from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._options import DEFAULT_CLUSTER_DIR, ClusterDirOpt

__all__ = ["app", "env", "start", "status", "stop"]

app = _help.Typer(
    help="A Spark standalone cluster on this machine (127.0.0.1), secured.",
    epilog=_help.examples(
        "cipherspark cluster start --workers 2",
        "cipherspark cluster status",
        "cipherspark cluster stop",
    ),
    no_args_is_help=True,
)


@app.command(
    epilog=_help.examples(
        "cipherspark cluster start",
        "cipherspark cluster start --workers 4 --cores 2 --memory 4g --dir /tmp/cluster",
    )
)
def start(
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes.")] = 2,
    cores: Annotated[int, typer.Option(min=1, help="Cores per worker.")] = 1,
    memory: Annotated[str, typer.Option(help="Memory per worker, e.g. 2g.")] = "2g",
    port: Annotated[int | None, typer.Option(help="Master port (default: a free one).")] = None,
    directory: ClusterDirOpt = DEFAULT_CLUSTER_DIR,
) -> None:
    """Start a master and workers with authenticated, encrypted RPC and encrypted shuffle.

    Executors inherit this command's environment: export CIPHERSPARK_APP_ID / _API_KEY (and
    CIPHERSPARK_KMS_CA for a KMS server) before starting it.
    """
    from cipherspark.spark.cluster import start_cluster

    cluster = start_cluster(directory, workers=workers, cores=cores, memory=memory, port=port)
    _out.print(f"started {len(cluster.worker_pids)} worker(s): {cluster.master_url}")
    _out.print("use it with:")
    _out.print(f"  export CIPHERSPARK_MASTER={cluster.master_url}")
    _out.print(f"  export CIPHERSPARK_SPARK_PROPERTIES={cluster.properties}")


@app.command(
    epilog=_help.examples(
        "cipherspark cluster status", "cipherspark cluster status --dir /tmp/cluster"
    )
)
def status(directory: ClusterDirOpt = DEFAULT_CLUSTER_DIR) -> None:
    """Show the cluster's master URL and whether each recorded process runs."""
    from cipherspark.spark.cluster import cluster_status

    cluster, alive = cluster_status(directory)
    _out.print(f"master {cluster.master_url}")
    roles = [("master", cluster.master_pid)] + [("worker", p) for p in cluster.worker_pids]
    for role, pid in roles:
        _out.print(f"  {role} pid {pid}: {'running' if alive[pid] else 'gone'}")
    if not all(alive.values()):
        raise typer.Exit(1)


@app.command(
    epilog=_help.examples(
        "cipherspark cluster env",
        'eval "$(cipherspark cluster env --dir .cipherspark/cluster)"',
    )
)
def env(directory: ClusterDirOpt = DEFAULT_CLUSTER_DIR) -> None:
    """Print the shell lines that point cipherspark's commands at the cluster (for eval)."""
    import shlex

    from cipherspark.spark.cluster import cluster_status

    cluster, alive = cluster_status(directory)
    if not alive.get(cluster.master_pid, False):
        from cipherspark.errors import ClusterError

        raise ClusterError(f"the cluster in {directory} is not running (cipherspark cluster start)")
    # Plain stdout, not the console: these lines are for the shell to evaluate, never wrapped.
    typer.echo(f"export CIPHERSPARK_MASTER={shlex.quote(cluster.master_url)}")
    typer.echo(
        f"export CIPHERSPARK_SPARK_PROPERTIES={shlex.quote(str(cluster.properties.absolute()))}"
    )


@app.command(
    epilog=_help.examples("cipherspark cluster stop", "cipherspark cluster stop --dir /tmp/cluster")
)
def stop(directory: ClusterDirOpt = DEFAULT_CLUSTER_DIR) -> None:
    """Stop exactly the processes 'cluster start' launched from this folder."""
    from cipherspark.spark.cluster import stop_cluster

    cluster = stop_cluster(directory)
    _out.print(f"stopped {cluster.master_url} ({1 + len(cluster.worker_pids)} processes)")
