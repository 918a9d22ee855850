"""``cipherspark deploy submit | gramine-manifest | attestation-policy``: deployment commands.

A thin layer over :mod:`cipherspark.deploy`. The three commands were top-level commands before
they became one group; :func:`add_aliases` keeps those names working (hidden from ``--help``),
for scripts and images built from 0.1.0's Dockerfile, which ran ``cipherspark gramine-manifest``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Annotated, Any

import typer

from cipherspark import settings
from cipherspark.cli import _help
from cipherspark.cli._io import out as _out
from cipherspark.cli._options import DEFAULT_MASTER, MasterOpt, OverwriteOpt
from cipherspark.errors import OutputExistsError, UsageError

__all__ = [
    "DEFAULT_DEPLOY_DIR",
    "add_aliases",
    "app",
    "attestation_policy",
    "gramine_manifest",
    "submit",
]

# Each command's examples, for its hidden alias too (they show the new name).
_SUBMIT_EXAMPLES = _help.examples(
    "cipherspark deploy submit --master k8s://https://k8s.example:6443 \\",
    "    --image registry.example/cipherspark \\",
    "    -- query simple --input /data/people.csv.cspk --output /data/dev.cspk --key simple",
    "cipherspark deploy submit --dry-run --master k8s://https://k8s.example:6443 \\",
    "    --image registry.example/cipherspark --overlay simulated \\",
    "    -- run --key simple /opt/cipherspark/apps/report.py /data/people.parquet /data/out",
)
_MANIFEST_EXAMPLES = _help.examples(
    "cipherspark deploy gramine-manifest cipherspark.manifest \\",
    "    --enclave-kms https://kms.example:8443 --enclave-kms-ca /opt/cipherspark/kms-ca.pem",
)
_POLICY_EXAMPLES = _help.examples(
    "cipherspark deploy attestation-policy policy.json --sigstruct cipherspark.sig \\",
    "    --key simple",
    "cipherspark deploy attestation-policy policy.json",
)

app = _help.Typer(
    help="Deploy to Kubernetes: submit jobs, write the Gramine manifest and the "
    "SGX key-release policy.",
    epilog=_help.examples(
        "cipherspark deploy gramine-manifest cipherspark.manifest \\",
        "    --enclave-kms https://kms.example:8443 --enclave-kms-ca /opt/cipherspark/kms-ca.pem",
        "cipherspark deploy attestation-policy policy.json --sigstruct cipherspark.sig",
        "cipherspark deploy submit --master k8s://https://k8s.example:6443 \\",
        "    --image registry.example/cipherspark \\",
        "    -- query simple --input /data/people.csv.cspk --output /data/dev.cspk --key simple",
    ),
    no_args_is_help=True,
)

#: The repository's deploy/ folder, relative to a checkout.
DEFAULT_DEPLOY_DIR = Path("deploy")

# '--' separates submit's own options from the job's; anything else left over is a mistake.
_SUBMIT_CONTEXT: dict[str, Any] = {"allow_extra_args": False}


@app.command("submit", context_settings=_SUBMIT_CONTEXT, epilog=_SUBMIT_EXAMPLES)
def submit(
    app_args: Annotated[
        list[str],
        typer.Argument(
            metavar="-- COMMAND...",
            help="The cipherspark command the driver runs, after '--', e.g. "
            "'-- query simple --input /data/people.csv.cspk --output /data/dev.cspk "
            "--key simple', or '-- run --key simple /opt/cipherspark/apps/report.py ARGS...' "
            "(an application built into the image, deploy/apps/). Paths are on the data "
            "volume (/data).",
        ),
    ],
    image: Annotated[
        str,
        typer.Option(
            "--image",
            envvar=settings.ENV_IMAGE,
            show_envvar=True,
            help="The cipherspark runtime image (deploy/Dockerfile) for driver and executors.",
        ),
    ],
    master: MasterOpt = DEFAULT_MASTER,
    namespace: Annotated[str, typer.Option(help="Namespace of the deployment.")] = "cipherspark",
    overlay: Annotated[
        str,
        typer.Option(
            help="Pod templates to use: sgx (Gramine enclaves), tdx (confidential VMs) or "
            "simulated (no TEE; development clusters only)."
        ),
    ] = "sgx",
    deploy_dir: Annotated[
        Path,
        typer.Option(
            "--deploy-dir",
            envvar=settings.ENV_DEPLOY_DIR,
            show_envvar=True,
            help="The repository's deploy/ folder (holds overlays/*/pod-templates).",
        ),
    ] = DEFAULT_DEPLOY_DIR,
    executors: Annotated[int, typer.Option(min=1, help="Executor pods.")] = 2,
    executor_cores: Annotated[int, typer.Option(min=1, help="Cores per executor.")] = 1,
    executor_memory: Annotated[str, typer.Option(help="JVM heap per executor.")] = "4g",
    driver_memory: Annotated[str, typer.Option(help="JVM heap of the driver.")] = "2g",
    name: Annotated[
        str | None,
        typer.Option(
            help="Spark application name (default: cipherspark-COMMAND, e.g. "
            "cipherspark-query-simple, or cipherspark-run-APP for 'run APP.py')."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the spark-submit command instead of running it."),
    ] = False,
) -> None:
    """Submit a cipherspark job to Spark on Kubernetes (secure confs, pod templates, secrets).

    --master must name the Kubernetes API server, k8s://https://HOST:PORT.
    """
    from cipherspark.deploy import (
        SubmitRequest,
        build_submit_command,
        find_spark_submit,
        format_command,
    )

    request = SubmitRequest(
        master=master,
        image=image,
        app_args=tuple(app_args),
        deploy_dir=deploy_dir,
        namespace=namespace,
        overlay=overlay,
        name=name,
        executors=executors,
        executor_cores=executor_cores,
        executor_memory=executor_memory,
        driver_memory=driver_memory,
        spark_submit="spark-submit" if dry_run else find_spark_submit(),
    )
    command = build_submit_command(request)
    if dry_run:
        _out.print(format_command(command.argv))
        return
    code = subprocess.run(command.argv, check=False).returncode
    if code:
        raise typer.Exit(code)


@app.command("gramine-manifest", epilog=_MANIFEST_EXAMPLES)
def gramine_manifest(
    out: Annotated[Path, typer.Argument(help="Manifest to write, e.g. cipherspark.manifest.")],
    # No envvar on purpose: what is measured into the enclave is named on the build's command
    # line, never picked up from whatever CIPHERSPARK_KMS the build environment has.
    kms: Annotated[
        str,
        typer.Option(
            "--enclave-kms",
            metavar="URL",
            help="The KMS the enclave trusts, https://HOST[:PORT] (measured: the enclave talks "
            "to no other).",
        ),
    ],
    kms_ca: Annotated[
        Path,
        typer.Option(
            "--enclave-kms-ca",
            help="The KMS's CA certificate (PEM) at its path in the image; measured as a "
            "trusted file.",
        ),
    ],
    launcher_dir: Annotated[
        Path,
        typer.Option(help="Folder with launcher.py and main.py (in the image: /opt/cipherspark)."),
    ] = Path("/opt/cipherspark"),
    gramine_libdir: Annotated[
        Path | None,
        typer.Option(
            help="Gramine's library folder (holds libsysdb.so; default: found where Gramine is "
            "installed)."
        ),
    ] = None,
    enclave_size: Annotated[str, typer.Option(help="sgx.enclave_size, e.g. 16G.")] = "16G",
    max_threads: Annotated[int, typer.Option(help="sgx.max_threads.")] = 512,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write the Gramine manifest measuring this environment's Python, JRE, Spark, cipherspark,
    the launcher and the KMS it trusts (URL and CA)."""
    from cipherspark.deploy import discover_manifest_paths, render_manifest

    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if not (launcher_dir / "launcher.py").is_file():
        raise UsageError(f"launcher folder {launcher_dir} has no launcher.py")
    paths = discover_manifest_paths(launcher_dir=launcher_dir, gramine_libdir=gramine_libdir)
    manifest = render_manifest(
        paths,
        kms_url=kms,
        kms_ca=kms_ca.absolute(),
        enclave_size=enclave_size,
        max_threads=max_threads,
    )
    out.write_text(manifest)
    _out.print(f"wrote {out}: the enclave trusts the KMS {kms.rstrip('/')} (CA {kms_ca})")
    _out.print(
        f"next: gramine-sgx-sign --manifest {out} "
        f"--output {out}.sgx (prints MRENCLAVE; keep the .sig)"
    )


@app.command("attestation-policy", epilog=_POLICY_EXAMPLES)
def attestation_policy(
    out: Annotated[Path, typer.Argument(help="Policy file to write (JSON).")],
    # Not the shared --key: a policy belongs to each key it is set on, and none defaults from
    # CIPHERSPARK_KEY (a policy should be attached on purpose).
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            metavar="NAME",
            help="Key the policy is for: prints its 'key policy set' line; repeatable.",
        ),
    ] = None,
    sigstruct: Annotated[
        Path | None,
        typer.Option(
            help="The .sig file gramine-sgx-sign wrote; without it MRENCLAVE is a placeholder."
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a KMS key-release policy for SGX enclaves (MRENCLAVE from gramine-sgx-sign).

    Attach it to a key with 'cipherspark key policy set KEY FILE' (--key prints that line).
    """
    from cipherspark.deploy import MRENCLAVE_PLACEHOLDER, policy_document, read_sigstruct
    from cipherspark.kms import validate_key_name

    for name in key or ():
        validate_key_name(name)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    measurement = read_sigstruct(sigstruct) if sigstruct is not None else None
    document = policy_document(measurement)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(document, indent=2) + "\n")
    _out.print(f"wrote {out}")
    if measurement is None:
        _out.print(f"MRENCLAVE is the placeholder {MRENCLAVE_PLACEHOLDER!r}. To fill it in:")
        _out.print(
            "  1. cipherspark deploy gramine-manifest cipherspark.manifest   (inside the image)"
        )
        _out.print(
            "  2. gramine-sgx-sign --manifest cipherspark.manifest "
            "--output cipherspark.manifest.sgx   (prints mr_enclave)"
        )
        _out.print(
            "  3. cipherspark deploy attestation-policy "
            f"{out} --sigstruct cipherspark.sig --overwrite   "
            "(or gramine-sgx-sigstruct-view cipherspark.sig)"
        )
        return
    _out.print(f"MRENCLAVE {measurement.mr_enclave}")
    _out.print(f"MRSIGNER  {measurement.mr_signer}")
    for name in key or ():
        _out.print(f"next: cipherspark key policy set {name} {out}")


def add_aliases(root: typer.Typer) -> None:
    """Register the deploy commands under their old top-level names on ``root``, hidden."""
    root.command("submit", hidden=True, context_settings=_SUBMIT_CONTEXT, epilog=_SUBMIT_EXAMPLES)(
        submit
    )
    root.command("gramine-manifest", hidden=True, epilog=_MANIFEST_EXAMPLES)(gramine_manifest)
    root.command("attestation-policy", hidden=True, epilog=_POLICY_EXAMPLES)(attestation_policy)
