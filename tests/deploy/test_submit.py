"""`cipherspark deploy submit --dry-run`: the exact security confs, file-based secrets, no secret on
the command line."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from cipherspark.cli import main
from cipherspark.deploy import SubmitRequest, build_submit_command
from cipherspark.deploy.launcher import JOB_CONF, check_enclave_job
from cipherspark.deploy.submit import SPARK_AUTH_SECRET_FILE
from cipherspark.errors import UsageError
from cipherspark.spark.session import SECURE_CONF
from tests.deploy.conftest import DEPLOY, OVERLAYS

MASTER = "k8s://https://k8s.example.internal:6443"
JOB = ["query", "simple", "--input", "/data/people.csv.cspk", "--output", "/data/dev.cspk",
       "--key", "simple"]


def dry_run(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str], str]:
    code = main(["submit", "--dry-run", "--master", MASTER, "--image",
                 "registry.example/cipherspark-sgx:0.1.0", "--deploy-dir", str(DEPLOY),
                 *extra, "--", *JOB])
    out, err = capsys.readouterr()
    return code, shlex.split(out.replace("\\\n", " ")), err


def confs(argv: list[str]) -> list[tuple[str, str]]:
    out = []
    for i, arg in enumerate(argv):
        if arg == "--conf":
            key, _, value = argv[i + 1].partition("=")
            out.append((key, value))
    return out


def test_dry_run_carries_every_secure_conf_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    code, argv, err = dry_run(capsys)
    assert code == 0, err
    settings = confs(argv)
    keys = [k for k, _ in settings]
    assert len(keys) == len(set(keys)), "no conf is given twice"
    conf = dict(settings)
    for key, value in SECURE_CONF.items():
        assert conf[key] == value, key
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.network.crypto.cipher"] == "AES/GCM/NoPadding"


def test_dry_run_uses_file_based_secrets_only(capsys: pytest.CaptureFixture[str]) -> None:
    _, argv, _ = dry_run(capsys)
    conf = dict(confs(argv))
    assert conf["spark.authenticate.secret.driver.file"] == SPARK_AUTH_SECRET_FILE
    assert conf["spark.authenticate.secret.executor.file"] == SPARK_AUTH_SECRET_FILE
    assert "spark.authenticate.secret" not in conf
    joined = " ".join(argv)
    for needle in ("--api-key", "--app-id", "CIPHERSPARK_API_KEY=", "spark.authenticate.secret=",
                   "secretKeyRef", "spark.kubernetes.driver.secrets.",
                   "spark.kubernetes.driverEnv."):
        assert needle not in joined


def test_dry_run_command_shape(capsys: pytest.CaptureFixture[str]) -> None:
    _, argv, _ = dry_run(capsys)
    assert argv[:7] == ["spark-submit", "--master", MASTER, "--deploy-mode", "cluster",
                        "--name", "cipherspark-query-simple"]
    resource = argv.index("local:///opt/cipherspark/main.py")
    assert argv[resource + 1:] == [*JOB, "--master", MASTER]
    conf = dict(confs(argv))
    assert conf["spark.kubernetes.namespace"] == "cipherspark"
    assert conf["spark.kubernetes.container.image"] == "registry.example/cipherspark-sgx:0.1.0"
    assert conf["spark.kubernetes.authenticate.driver.serviceAccountName"] == "spark"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_templates_of_the_overlay(capsys: pytest.CaptureFixture[str], overlay: str) -> None:
    code, argv, err = dry_run(capsys, "--overlay", overlay, "--namespace", "analytics")
    assert code == 0, err
    conf = dict(confs(argv))
    assert conf["spark.kubernetes.namespace"] == "analytics"
    for role in ("driver", "executor"):
        path = Path(conf[f"spark.kubernetes.{role}.podTemplateFile"])
        assert path == DEPLOY / "overlays" / overlay / "pod-templates" / f"{role}.yaml"
        template = yaml.safe_load(path.read_text())
        names = [c["name"] for c in template["spec"]["containers"]]
        assert conf[f"spark.kubernetes.{role}.podTemplateContainerName"] in names
        secret_dir = SPARK_AUTH_SECRET_FILE.rsplit("/", 1)[0]
        assert any(m["mountPath"] == secret_dir
                   for m in template["spec"]["containers"][0]["volumeMounts"])


@pytest.mark.parametrize(("extra", "job", "message"), [
    (["--master", "k8s://http://k8s:6443"], JOB, "k8s://https://"),
    (["--master", "spark://host:7077"], JOB, "Kubernetes API URL"),
    (["--overlay", "sev"], JOB, "--overlay must be one of"),
    ([], [*JOB, "--api-key", "abc"], "credential"),
    ([], [*JOB, "--app-id=abc"], "credential"),
    ([], ["decrypt", "a", "b"], "only 'query ...', 'sql ...' and 'run APP.py ...'"),
    ([], ["run", "--key", "k", "/data/app.py"], "built into the image under /opt/cipherspark/apps"),
    ([], ["run", "--key", "k", "/opt/cipherspark/apps/../x.py"], "not plain"),
    ([], ["run", "--key", "k", "/opt/cipherspark/apps/app.sh"], "is not a .py file"),
    ([], ["run", "--key", "k"], "name the application after 'run'"),
    ([], [], "after '--'"),
    ([], [*JOB, "--master", "local[*]"], "differs"),
    (["--namespace", "Bad_NS"], JOB, "namespace"),
    (["--executor-memory", "lots"], JOB, "JVM size"),
])
def test_refusals(capsys: pytest.CaptureFixture[str], extra: list[str], job: list[str],
                  message: str) -> None:
    argv = ["submit", "--dry-run", "--image", "img:1", "--deploy-dir", str(DEPLOY)]
    if "--master" not in extra:
        argv += ["--master", MASTER]
    code = main([*argv, *extra, "--", *job] if job else [*argv, *extra])
    _, err = capsys.readouterr()
    assert code == 2
    if job:  # without any job, Typer itself reports the missing argument
        assert message in err


def test_missing_deploy_dir_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pod template"):
        build_submit_command(SubmitRequest(master=MASTER, image="img:1", app_args=tuple(JOB),
                                           deploy_dir=tmp_path))


def test_secret_confs_are_refused() -> None:
    for key in ("spark.authenticate.secret", "spark.ssl.keyPassword",
                "spark.hadoop.fs.s3a.session.token"):
        with pytest.raises(UsageError, match="secret"):
            build_submit_command(SubmitRequest(master=MASTER, image="img:1",
                                               app_args=tuple(JOB), deploy_dir=DEPLOY,
                                               extra_conf={key: "x"}))


# -- the job an SGX driver runs ---------------------------------------------------------------

SQL = ["sql", "SELECT job, count(*) FROM people GROUP BY job", "--table",
       "people=/data/people.csv.cspk", "--output", "/data/jobs.cspk", "--key", "simple"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_job_travels_in_the_conf_the_enclave_reads(capsys: pytest.CaptureFixture[str],
                                                       overlay: str) -> None:
    code, argv, err = dry_run(capsys, "--overlay", overlay)
    assert code == 0, err
    conf = dict(confs(argv))
    assert json.loads(conf[JOB_CONF]) == [*JOB, "--master", MASTER]
    # What an SGX driver's launcher will accept, as it will normalise it.
    assert check_enclave_job(json.loads(conf[JOB_CONF]), MASTER) == (*JOB, "--master", MASTER)


@pytest.mark.parametrize(("job", "message"), [
    (SQL, "runs only 'query simple"),
    ([*JOB, "--show", "5"], "--show is not allowed"),
    (["query", "simple", "--input", "/tmp/people.csv.cspk", "--output", "/data/dev.cspk",
      "--key", "simple"], "not a path under /data"),
    ([*JOB, "--input-key", "other"], "--input-key differs"),
])
def test_sgx_refuses_at_submit_what_the_enclave_would_refuse(job: list[str], message: str) -> None:
    request = SubmitRequest(master=MASTER, image="img:1", app_args=tuple(job), deploy_dir=DEPLOY)
    with pytest.raises(UsageError, match="the SGX enclave would refuse this job") as raised:
        build_submit_command(request)
    assert message in str(raised.value)
    # Outside SGX the driver is not constrained by a launcher: sql still runs there.
    if job is SQL:
        build_submit_command(SubmitRequest(master=MASTER, image="img:1", app_args=tuple(job),
                                           deploy_dir=DEPLOY, overlay="tdx"))


def test_the_job_conf_cannot_be_overridden() -> None:
    with pytest.raises(UsageError, match="from the job"):
        build_submit_command(SubmitRequest(master=MASTER, image="img:1", app_args=tuple(JOB),
                                           deploy_dir=DEPLOY, extra_conf={JOB_CONF: "[]"}))


# -- an unmodified application (cipherspark run) ----------------------------------------------

RUN = ["run", "--key", "simple", "--table", "people=/data/people.parquet",
       "/opt/cipherspark/apps/report.py", "--master", "its-own-argument", "/data/out.parquet"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_run_submits_an_application_built_into_the_image(overlay: str) -> None:
    command = build_submit_command(SubmitRequest(master=MASTER, image="img:1",
                                                 app_args=tuple(RUN), deploy_dir=DEPLOY,
                                                 overlay=overlay))
    # The job's --master goes before the application: what follows it is the application's,
    # even an argument that looks like one of ours.
    job = [*RUN[:5], "--master", MASTER, *RUN[5:]]
    assert json.loads(command.conf[JOB_CONF]) == job
    resource = command.argv.index("local:///opt/cipherspark/main.py")
    assert list(command.argv[resource + 1:]) == job
    assert command.argv[command.argv.index("--name") + 1] == "cipherspark-run-report"
    # What an SGX driver's launcher accepts, as it normalises it.
    assert check_enclave_job(job, MASTER) == tuple(job)


@pytest.mark.parametrize(("job", "message"), [
    (["run", "--key", "simple", "--unsafe-plaintext-output", "/opt/cipherspark/apps/r.py"],
     "--unsafe-plaintext-output is not allowed in an SGX driver"),
    (["run", "--key", "simple", "--table", "t=/tmp/t", "/opt/cipherspark/apps/r.py"],
     "is not a path under /data"),
    (["run", "/opt/cipherspark/apps/r.py"], "--key is missing"),
])
def test_sgx_refuses_a_run_the_enclave_would_refuse(job: list[str], message: str) -> None:
    request = SubmitRequest(master=MASTER, image="img:1", app_args=tuple(job), deploy_dir=DEPLOY)
    with pytest.raises(UsageError, match="the SGX enclave would refuse this job") as raised:
        build_submit_command(request)
    assert message in str(raised.value)


def _documented_submits() -> list[tuple[str, list[str]]]:
    """Every ``cipherspark deploy submit`` command in the deployment docs, as argv."""
    found = []
    for doc in (DEPLOY.parent / "docs" / "deploy-kubernetes.md", DEPLOY / "apps" / "README.md"):
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("cipherspark deploy submit"):
                line = line.replace("$REG", "registry.example").replace("API_SERVER", "k8s.local")
                found.append((doc.name, shlex.split(line)[1:]))
    return found


@pytest.mark.parametrize(("doc", "argv"), _documented_submits())
def test_the_documented_submit_commands_are_accepted(
    capsys: pytest.CaptureFixture[str], doc: str, argv: list[str]
) -> None:
    end = argv.index("--")
    code = main([*argv[1:end], "--deploy-dir", str(DEPLOY), *argv[end:]])
    _, err = capsys.readouterr()
    assert code == 0, f"{doc}: {err}"
