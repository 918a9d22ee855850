"""The program the SGX enclave runs: the Gramine manifest's fixed ``loader.argv``.

    python3 -I -B /opt/cipherspark/launcher.py --kms=https://... --kms-ca=... ...

Its arguments are the enclave's measured settings (cipherspark.deploy.launcher.EnclaveConfig),
written into the manifest at image build; Gramine discards any command line the host passes. It
decides from them and from the few Spark variables the manifest lets through whether this pod
is a driver or an executor, builds that java command and its whole environment (nothing of the
host's environment is copied), and replaces itself with it. Anything it does not accept ends the
pod with one line on stderr and exit code 2, before any Spark or cipherspark code runs.
"""

import os
import sys

from cipherspark.deploy.launcher import EnclaveConfig, prepare_launch
from cipherspark.errors import CipherSparkError


def main(argv: list[str]) -> int:
    """Start the driver or executor this pod is for; return an exit code only on refusal."""
    try:
        plan = prepare_launch(EnclaveConfig.from_argv(argv), dict(os.environ))
    except CipherSparkError as exc:
        print(f"cipherspark enclave: {exc}", file=sys.stderr, flush=True)
        return 2
    if plan.dropped_conf:
        # Not an error: spark-submit writes keys the enclave does not need. Named so that an
        # operator sees which of their settings had no effect inside the enclave.
        print(
            "cipherspark enclave: ignored Spark settings: " + ", ".join(plan.dropped_conf),
            file=sys.stderr,
            flush=True,
        )
    os.execve(plan.argv[0], list(plan.argv), dict(plan.env))
    return 127  # not reached: execve replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
