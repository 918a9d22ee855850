"""The enclave's measured launcher, played against by the host of an SGX node.

The host controls the pod: its command line (which Gramine discards: the manifest fixes
loader.argv, tests/deploy/test_gramine.py), its environment (of which only PASSTHROUGH_ENV
enters) and the driver's spark.properties. Whatever it puts there, the java command the launcher
builds has fixed JVM options, class path and environment, the measured KMS, and only checked
values from Spark's variables; a value not in the form Spark writes is refused, with one error.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cipherspark.deploy import launcher
from cipherspark.deploy._launch_values import parse_properties
from cipherspark.deploy.launcher import (
    EXECUTOR_BACKEND,
    JOB_CONF,
    JVM_MODULE_OPTIONS,
    EnclaveConfig,
    check_enclave_job,
    driver_plan,
    executor_plan,
    launch_role,
    prepare_launch,
)
from cipherspark.errors import InputError, UsageError
from cipherspark.spark.session import SECURE_CONF
from tests.deploy.conftest import DEPLOY, KMS_URL

CONFIG = EnclaveConfig(
    kms_url=KMS_URL,
    kms_ca=Path("/opt/cipherspark-sgx/kms-ca.crt"),
    python=Path("/usr/local/bin/python3.12"),
    java_home=Path("/usr/lib/jvm/java-17-openjdk-amd64"),
    spark_home=Path("/usr/local/lib/python3.12/site-packages/pyspark"),
    main_py=Path("/opt/cipherspark/main.py"),
    log4j=Path("/usr/local/lib/python3.12/site-packages/cipherspark/spark/log4j2.properties"),
    max_heap_mib=15360,
    ld_library_path="/lib:/usr/lib/x86_64-linux-gnu:/usr/lib",
    secure_conf=tuple(SECURE_CONF.items()),
)
APP = "cipherspark-query-simple-0123456789abcdef"
#: What Spark's BasicExecutorFeatureStep sets on an executor pod (Spark 4.1).
EXECUTOR_ENV = {
    "SPARK_DRIVER_URL": f"spark://CoarseGrainedScheduler@{APP}-driver-svc.cipherspark.svc:7078",
    "SPARK_EXECUTOR_ID": "1",
    "SPARK_EXECUTOR_CORES": "1",
    "SPARK_EXECUTOR_MEMORY": "4096m",
    "SPARK_APPLICATION_ID": "spark-0123456789abcdef0123456789abcdef",
    "SPARK_EXECUTOR_POD_IP": "10.244.1.17",
    "SPARK_EXECUTOR_POD_NAME": f"{APP}-exec-1",
    "SPARK_RESOURCE_PROFILE_ID": "0",
    "SPARK_LOCAL_DIRS": "/var/data/spark-6b1c5ad0-3c1e-4b8e-9d2f-0123456789ab",
    "SPARK_USER": "spark",
    "SPARK_CONF_DIR": "/opt/spark/conf",
    "SPARK_JAVA_OPT_0": "-Dlog4j2.configurationFile=file:/opt/evil/log4j2.properties",
    "SPARK_JAVA_OPT_1": "-Dspark.driver.port=7078",
}
#: What the host adds: every one would run host code, weaken Spark's security, change the KMS
#: or its CA, or switch attestation off, if it reached the java command. Each value says "evil"
#: (or is a weakening setting), so that any trace of it can be searched for.
HOSTILE_ENV = {
    "JAVA_TOOL_OPTIONS": "-javaagent:/data/evil.jar",
    "_JAVA_OPTIONS": "-javaagent:/data/evil.jar",
    "JDK_JAVA_OPTIONS": "-javaagent:/data/evil.jar",
    "CLASSPATH": "/data/evil.jar",
    "LD_PRELOAD": "/data/evil.so",
    "LD_AUDIT": "/data/evil.so",
    "LD_LIBRARY_PATH": "/data/evil",
    "PATH": "/data/evil:/usr/bin",
    "JAVA_HOME": "/data/evil-jdk",
    "SPARK_HOME": "/data/evil-spark",
    "PYTHONPATH": "/data/evil",
    "PYTHONSTARTUP": "/data/evil.py",
    "PYTHONHOME": "/data/evil",
    "PYSPARK_PYTHON": "/data/evil/python",
    "PYSPARK_DRIVER_PYTHON": "/data/evil/python",
    "CIPHERSPARK_KMS": "https://evil.example:8443",
    "CIPHERSPARK_KMS_CA": "/data/evil-ca.pem",
    "CIPHERSPARK_TEE": "none",
    "CIPHERSPARK_APP_ID_FILE": "/data/evil-app-id",
    "CIPHERSPARK_API_KEY_FILE": "/data/evil-api-key",
    "CIPHERSPARK_KMS_UNSAFE_PLAINTEXT": "1",
    "CIPHERSPARK_SIMULATED_TEE_KEY": "/data/evil.key",
    "SPARK_JAVA_OPT_2": "-javaagent:/data/evil.jar",
    "SPARK_JAVA_OPT_3": "-Dspark.network.crypto.enabled=false",
    "SPARK_JAVA_OPT_4": "-Dspark.authenticate=false",
    "SPARK_CLASSPATH": "/data/evil.jar",
    "SPARK_EXTRA_CLASSPATH": "/data/evil.jar",
    "SPARK_DIST_CLASSPATH": "/data/evil.jar",
    "SPARK_AUTH_SECRET": "evil-host-chosen-secret",
    "SPARK_SUBMIT_OPTS": "-javaagent:/data/evil.jar",
    "SPARK_DAEMON_JAVA_OPTS": "-javaagent:/data/evil.jar",
    "HADOOP_CONF_DIR": "/data/evil",
    "SPARK_EXECUTOR_DIRS": "/data/evil",
}
#: The executor's environment: fixed, or the measured settings; nothing else.
EXECUTOR_PLAN_ENV = {
    "PATH": f"{CONFIG.java_home}/bin:/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LD_LIBRARY_PATH": CONFIG.ld_library_path,
    "JAVA_HOME": str(CONFIG.java_home),
    "SPARK_HOME": str(CONFIG.spark_home),
    "SPARK_CONF_DIR": "/opt/cipherspark-sgx/spark-conf",
    "PYSPARK_PYTHON": str(CONFIG.python),
    "PYSPARK_DRIVER_PYTHON": str(CONFIG.python),
    "PYTHONDONTWRITEBYTECODE": "1",
    "MALLOC_ARENA_MAX": "4",
    "CIPHERSPARK_KMS": KMS_URL,
    "CIPHERSPARK_KMS_CA": "/opt/cipherspark-sgx/kms-ca.crt",
    "CIPHERSPARK_TEE": "gramine-sgx",
    "CIPHERSPARK_APP_ID_FILE": "/etc/cipherspark/kms-credentials/app-id",
    "CIPHERSPARK_API_KEY_FILE": "/etc/cipherspark/kms-credentials/api-key",
    "SPARK_LOCAL_DIRS": EXECUTOR_ENV["SPARK_LOCAL_DIRS"],
    "SPARK_USER": "spark",
}
MASTER = "k8s://https://k8s.example.internal:6443"
JOB = ["query", "simple", "--input", "/data/people.csv.cspk", "--output", "/data/dev.cspk",
       "--key", "simple", "--master", MASTER]


def store(entries: dict[str, str]) -> str:
    """``entries`` as java.util.Properties.store writes them (Spark's spark.properties)."""
    def escape(text: str, key: bool) -> str:
        out = []
        for i, char in enumerate(text):
            if char in "\\=:#!":
                out.append("\\" + char)
            elif char == " " and (key or i == 0):
                out.append("\\ ")
            elif char == "\t":
                out.append("\\t")
            elif char == "\n":
                out.append("\\n")
            else:
                out.append(char)
        return "".join(out)

    lines = ["#Java properties written by Spark", "#Mon Dec 01 22:56:04 UTC 2026"]
    lines += [f"{escape(k, True)}={escape(v, False)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


#: The spark.properties spark-submit writes for `cipherspark deploy submit --overlay sgx`
#: (cluster mode: the keys its steps add, and the confs submit sets).
DRIVER_PROPERTIES = {
    "spark.app.id": "spark-0123456789abcdef0123456789abcdef",
    "spark.app.name": "cipherspark-query-simple",
    "spark.app.submitTime": "1764629764000",
    "spark.master": MASTER,
    "spark.submit.deployMode": "cluster",
    "spark.driver.host": f"{APP}-driver-svc.cipherspark.svc",
    "spark.driver.port": "7078",
    "spark.driver.blockManager.port": "7079",
    "spark.driver.memory": "2g",
    "spark.executor.instances": "2",
    "spark.executor.cores": "1",
    "spark.executor.memory": "4g",
    "spark.kubernetes.namespace": "cipherspark",
    "spark.kubernetes.driver.pod.name": f"{APP}-driver",
    "spark.kubernetes.executor.podNamePrefix": APP,
    "spark.kubernetes.container.image": "registry.example/cipherspark-sgx:0.1.0",
    "spark.kubernetes.executor.podTemplateFile": "/opt/spark/pod-template/pod-spec-template.yml",
    "spark.kubernetes.resource.type": "python",
    "spark.kubernetes.submitInDriver": "true",
    "spark.kubernetes.memoryOverheadFactor": "0.4",
    **SECURE_CONF,
    "spark.authenticate.secret.driver.file": "/etc/cipherspark/spark-auth/secret",
    "spark.authenticate.secret.executor.file": "/etc/cipherspark/spark-auth/secret",
    "spark.pyspark.python": "/usr/local/bin/python3",
    "spark.submit.pyFiles": "",
    JOB_CONF: json.dumps(JOB[:-2]),
}
DRIVER_ENV = {"SPARK_DRIVER_BIND_ADDRESS": "10.244.1.5", "KUBERNETES_SERVICE_HOST": "10.96.0.1",
              "KUBERNETES_SERVICE_PORT": "443", "SPARK_CONF_DIR": "/opt/spark/conf",
              "SPARK_USER": "spark"}
#: What the host adds to the driver's spark.properties: code to load, security switched off, the
#: KMS or secrets replaced, pod environment, class names the driver instantiates.
HOSTILE_PROPERTIES = {
    "spark.jars": "local:///data/evil.jar",
    "spark.driver.extraJavaOptions": "-javaagent:/data/evil.jar",
    "spark.driver.extraClassPath": "/data/evil.jar",
    "spark.driver.extraLibraryPath": "/data/evil",
    "spark.executor.extraJavaOptions": "-javaagent:/data/evil.jar",
    "spark.executor.extraClassPath": "/data/evil.jar",
    "spark.plugins": "org.evil.Plugin",
    "spark.extraListeners": "org.evil.Listener",
    "spark.sql.extensions": "org.evil.Extensions",
    "spark.sql.queryExecutionListeners": "org.evil.Listener",
    "spark.files": "/data/evil.py",
    "spark.archives": "/data/evil.zip",
    "spark.executorEnv.LD_PRELOAD": "/data/evil.so",
    "spark.kubernetes.driverEnv.LD_PRELOAD": "/data/evil.so",
    "spark.kubernetes.driver.pod.featureSteps": "org.evil.Step",
    "spark.kubernetes.executor.pod.featureSteps": "org.evil.Step",
    "spark.kubernetes.allocation.pods.allocator": "org.evil.Allocator",
    "spark.python.daemon.module": "evil",
    "spark.python.worker.module": "evil",
    "spark.pyspark.driver.python": "/data/evil/python",
    "spark.authenticate.secret": "evil-host-chosen-secret",
    "spark.driver.bindAddress": "0.0.0.0",
    "spark.driver.userClassPathFirst": "true",
}
#: Spark's security settings switched off in the same file (the keys exist, so these replace).
WEAKENED = {"spark.authenticate": "false", "spark.network.crypto.enabled": "false",
            "spark.io.encryption.enabled": "false", "spark.ui.enabled": "true",
            "spark.python.unix.domain.socket.enabled": "false",
            "spark.authenticate.secret.driver.file": "/data/evil-secret",
            "spark.pyspark.python": "/data/evil/python"}


def confs(argv: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for i, arg in enumerate(argv):
        if arg == "--conf":
            key, _, value = argv[i + 1].partition("=")
            assert key not in out
            out[key] = value
    return out


def no_trace_of_evil(plan: launcher.LaunchPlan) -> None:
    for text in [*plan.argv, *plan.env, *plan.env.values()]:
        assert "evil" not in text.lower(), text


# -- the executor -----------------------------------------------------------------------------


def test_executor_command_is_exactly_spark_contract_with_fixed_options() -> None:
    plan = executor_plan(CONFIG, EXECUTOR_ENV)
    assert plan.role == "executor"
    startup = [f"-D{k}={v}" for k, v in SECURE_CONF.items()
               if k.startswith(("spark.authenticate", "spark.network"))]
    assert len(startup) == 4
    assert plan.argv == (
        f"{CONFIG.java_home}/bin/java",
        *JVM_MODULE_OPTIONS,
        f"-Dlog4j2.configurationFile=file://{CONFIG.log4j}",
        "-Djava.io.tmpdir=/tmp",
        "-Xms4096m", "-Xmx4096m",
        *startup,
        "-Dspark.authenticate.secret.executor.file=/etc/cipherspark/spark-auth/secret",
        "-cp", f"{CONFIG.spark_home}/jars/*",
        EXECUTOR_BACKEND,
        "--driver-url", EXECUTOR_ENV["SPARK_DRIVER_URL"],
        "--executor-id", "1", "--cores", "1",
        "--app-id", EXECUTOR_ENV["SPARK_APPLICATION_ID"],
        "--hostname", "10.244.1.17", "--resourceProfileId", "0",
        "--podName", EXECUTOR_ENV["SPARK_EXECUTOR_POD_NAME"],
    )
    assert dict(plan.env) == EXECUTOR_PLAN_ENV


def test_host_environment_never_reaches_the_executor() -> None:
    plan = executor_plan(CONFIG, {**EXECUTOR_ENV, **HOSTILE_ENV})
    assert plan == executor_plan(CONFIG, EXECUTOR_ENV)  # as if the host had added nothing
    assert dict(plan.env) == EXECUTOR_PLAN_ENV
    no_trace_of_evil(plan)
    assert "SPARK_AUTH_SECRET" not in plan.env
    assert "-Dspark.network.crypto.enabled=false" not in plan.argv
    assert "-Dspark.authenticate=false" not in plan.argv
    # The measured KMS, CA and TEE, whatever the host's CIPHERSPARK_* say.
    assert plan.env["CIPHERSPARK_KMS"] == KMS_URL
    assert plan.env["CIPHERSPARK_TEE"] == "gramine-sgx"
    assert "CIPHERSPARK_KMS_UNSAFE_PLAINTEXT" not in plan.env


GOOD = EXECUTOR_ENV
MALFORMED = [
    ("SPARK_DRIVER_URL", "http://driver:7078"),
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@driver"),
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@driver:0"),
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@driver:70000"),
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@driver:7078 --cores 64"),
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@dri_ver:7078"),
    ("SPARK_DRIVER_URL", "spark://Other@driver:7078"),
    ("SPARK_DRIVER_URL", "spark://CoarseGrainedScheduler@driver:7078\n-javaagent:x"),
    ("SPARK_EXECUTOR_ID", "0"),
    ("SPARK_EXECUTOR_ID", "01"),
    ("SPARK_EXECUTOR_ID", "-1"),
    ("SPARK_EXECUTOR_ID", " 1"),
    ("SPARK_EXECUTOR_ID", "1 --podName x"),
    ("SPARK_EXECUTOR_ID", "99999999999"),
    ("SPARK_EXECUTOR_CORES", "0"),
    ("SPARK_EXECUTOR_CORES", "513"),
    ("SPARK_EXECUTOR_CORES", "1.5"),
    ("SPARK_EXECUTOR_MEMORY", "4g"),
    ("SPARK_EXECUTOR_MEMORY", "32m"),
    ("SPARK_EXECUTOR_MEMORY", "15361m"),
    ("SPARK_EXECUTOR_MEMORY", "4096m -javaagent:x"),
    ("SPARK_APPLICATION_ID", "spark app"),
    ("SPARK_APPLICATION_ID", "--evil"),
    ("SPARK_EXECUTOR_POD_IP", "127.0.0.1"),
    ("SPARK_EXECUTOR_POD_IP", "0.0.0.0"),
    ("SPARK_EXECUTOR_POD_IP", "driver.example"),
    ("SPARK_RESOURCE_PROFILE_ID", "-1"),
    ("SPARK_EXECUTOR_POD_NAME", "Exec_1"),
    ("SPARK_EXECUTOR_POD_NAME", "a" * 254),
    ("SPARK_LOCAL_DIRS", "/etc"),
    ("SPARK_LOCAL_DIRS", "/var/data/../../etc"),
    ("SPARK_LOCAL_DIRS", "/var/data/spark-1,/tmp/x"),
    ("SPARK_LOCAL_DIRS", "/var/data"),
    ("SPARK_USER", "spark user"),
]


@pytest.mark.parametrize(("name", "value"), MALFORMED)
def test_a_malformed_value_is_refused_with_one_clear_error(name: str, value: str) -> None:
    with pytest.raises(InputError) as raised:
        executor_plan(CONFIG, {**GOOD, name: value})
    message = str(raised.value)
    assert message.startswith("the enclave refuses to start the executor: ")
    assert message.count(name) == 1 and "\n" not in message
    assert message.count(";") == 0  # one problem, one clause


def test_every_problem_of_a_start_is_named_in_the_one_error() -> None:
    env = {**GOOD, "SPARK_EXECUTOR_CORES": "lots", "SPARK_EXECUTOR_MEMORY": "all"}
    del env["SPARK_DRIVER_URL"]
    with pytest.raises(InputError) as raised:
        executor_plan(CONFIG, env)
    message = str(raised.value)
    assert "SPARK_DRIVER_URL is not set" in message
    assert "SPARK_EXECUTOR_CORES='lots'" in message and "SPARK_EXECUTOR_MEMORY='all'" in message


def test_the_role_comes_from_sparks_variables() -> None:
    assert launch_role(EXECUTOR_ENV) == "executor"
    assert launch_role(DRIVER_ENV) == "driver"
    for env in ({}, {**EXECUTOR_ENV, **DRIVER_ENV}):
        with pytest.raises(InputError, match="exactly one of"):
            launch_role(env)


def test_jvm_module_options_are_the_installed_sparks() -> None:
    """The fixed list equals JavaModuleOptions' string constants in the installed Spark jar."""
    import pyspark

    jar = next((Path(pyspark.__file__).parent / "jars").glob("spark-launcher_*.jar"))
    with zipfile.ZipFile(jar) as archive:
        data = archive.read("org/apache/spark/launcher/JavaModuleOptions.class")
    strings = class_constants(data)
    installed = [s for s in strings if s.startswith(("-XX:", "--add-", "-D", "--enable-"))]
    assert tuple(installed) == JVM_MODULE_OPTIONS


def class_constants(data: bytes) -> list[str]:
    """The CONSTANT_Utf8 entries of a class file, in order (JVM spec 4.4)."""
    count = int.from_bytes(data[8:10], "big")
    out, i, index = [], 10, 1
    sizes = {3: 4, 4: 4, 5: 8, 6: 8, 7: 2, 8: 2, 9: 4, 10: 4, 11: 4, 12: 4, 15: 3, 16: 2,
             17: 4, 18: 4, 19: 2, 20: 2}
    while index < count:
        tag = data[i]
        if tag == 1:
            length = int.from_bytes(data[i + 1:i + 3], "big")
            out.append(data[i + 3:i + 3 + length].decode("utf-8", "replace"))
            i += 3 + length
        else:
            i += 1 + sizes[tag]
        index += 2 if tag in (5, 6) else 1
    return out


# -- the driver -------------------------------------------------------------------------------


def test_driver_command_is_spark_submit_in_client_mode_with_the_checked_job() -> None:
    plan = driver_plan(CONFIG, DRIVER_ENV, store(DRIVER_PROPERTIES), ("app-1", "key-1"))
    assert plan.role == "driver"
    head = plan.argv[:plan.argv.index("org.apache.spark.deploy.SparkSubmit") + 1]
    assert head == (f"{CONFIG.java_home}/bin/java", *JVM_MODULE_OPTIONS,
                    f"-Dlog4j2.configurationFile=file://{CONFIG.log4j}", "-Djava.io.tmpdir=/tmp",
                    "-Xmx2048m", "-cp", f"{CONFIG.spark_home}/jars/*",
                    "org.apache.spark.deploy.SparkSubmit")
    resource = plan.argv.index("local:///opt/cipherspark/main.py")
    assert plan.argv[resource - 2:resource] == ("--class", "org.apache.spark.deploy.PythonRunner")
    assert list(plan.argv[resource + 1:]) == JOB
    conf = confs(plan.argv)
    assert conf["spark.driver.bindAddress"] == "10.244.1.5"
    assert conf["spark.master"] == MASTER
    assert conf["spark.kubernetes.driver.pod.name"] == f"{APP}-driver"
    assert JOB_CONF not in conf
    assert plan.env["CIPHERSPARK_APP_ID"] == "app-1" and plan.env["CIPHERSPARK_API_KEY"] == "key-1"
    assert plan.env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert "key-1" not in repr(plan)


def test_host_properties_never_reach_the_driver() -> None:
    properties = store({**DRIVER_PROPERTIES, **WEAKENED, **HOSTILE_PROPERTIES})
    plan = driver_plan(CONFIG, {**DRIVER_ENV, **HOSTILE_ENV}, properties)
    no_trace_of_evil(plan)
    conf = confs(plan.argv)
    for key, value in SECURE_CONF.items():
        assert conf[key] == value, key
    assert conf["spark.authenticate.secret.driver.file"] == "/etc/cipherspark/spark-auth/secret"
    assert conf["spark.pyspark.python"] == conf["spark.pyspark.driver.python"] == str(
        CONFIG.python)
    assert "spark.authenticate.secret" not in conf
    assert set(HOSTILE_PROPERTIES) - {"spark.pyspark.driver.python", "spark.driver.bindAddress"} \
        <= set(plan.dropped_conf)
    assert plan.env["CIPHERSPARK_KMS"] == KMS_URL
    assert not {"JAVA_TOOL_OPTIONS", "LD_PRELOAD", "PYTHONPATH", "SPARK_AUTH_SECRET"} & set(
        plan.env)


@pytest.mark.parametrize(("change", "expected"), [
    ({"spark.master": "local[*]"}, "spark.master='local[*]' is not k8s://https://"),
    ({"spark.master": "k8s://http://k8s:6443"}, "is not k8s://https://"),
    ({"spark.driver.memory": "64g"}, "spark.driver.memory='64g'"),
    ({"spark.driver.memory": "2 g"}, "spark.driver.memory='2 g'"),
    ({JOB_CONF: "query simple"}, f"{JOB_CONF} is not a JSON array"),
    ({JOB_CONF: json.dumps(["sql", "SELECT 1", "--output", "/data/o", "--key", "k"])},
     "runs only 'query simple"),
    ({JOB_CONF: json.dumps([*JOB[:-2], "--show", "5"])}, "--show is not allowed"),
    ({"spark.kubernetes.namespace": "cipherspark\n-javaagent:x"}, "control characters"),
])
def test_driver_refuses_a_bad_properties_file(change: dict[str, str], expected: str) -> None:
    with pytest.raises(InputError) as raised:
        driver_plan(CONFIG, DRIVER_ENV, store({**DRIVER_PROPERTIES, **change}))
    message = str(raised.value)
    assert message.startswith("the enclave refuses to start the driver: ")
    assert expected in message and "\n" not in message


def test_driver_refuses_a_bad_bind_address_and_api_endpoint() -> None:
    env = {**DRIVER_ENV, "SPARK_DRIVER_BIND_ADDRESS": "0.0.0.0", "KUBERNETES_SERVICE_PORT": "x"}
    with pytest.raises(InputError) as raised:
        driver_plan(CONFIG, env, store(DRIVER_PROPERTIES))
    assert "SPARK_DRIVER_BIND_ADDRESS='0.0.0.0'" in str(raised.value)
    assert "KUBERNETES_SERVICE_PORT='x'" in str(raised.value)


# -- the job an SGX driver runs ---------------------------------------------------------------


def test_the_allowed_job_is_normalised() -> None:
    assert check_enclave_job(JOB[:-2], MASTER) == tuple(JOB)
    given = ["query", "simple", "-i", "/data/in", "--output=/data/out", "--overwrite",
             "--key", "k", "--input-key", "k", "--master", MASTER]
    assert check_enclave_job(given, MASTER) == ("query", "simple", "--input", "/data/in",
                                                "--output", "/data/out", "--key", "k",
                                                "--master", MASTER, "--overwrite")


@pytest.mark.parametrize(("args", "expected"), [
    (["sql", "SELECT * FROM t", "--table", "t=/data/t", "--output", "/data/o", "--key", "k"],
     "runs only 'query simple"),
    (["decrypt", "/data/o", "/data/o.csv"], "runs only 'query simple"),
    ([*JOB[:-2], "--show", "10"], "--show is not allowed"),
    ([*JOB[:-2], "--show=10"], "--show is not allowed"),
    ([*JOB[:-2], "--kms", "https://evil.example"], "--kms is not allowed"),
    ([*JOB[:-2], "--kms-ca", "/data/ca"], "--kms-ca is not allowed"),
    ([*JOB[:-2], "--api-key", "x"], "--api-key is not allowed"),
    ([*JOB[:-2], "--app-id=x"], "--app-id is not allowed"),
    ([*JOB[:-2], "--spark-properties", "/data/p"], "--spark-properties is not allowed"),
    ([*JOB[:-2], "--input-key", "other"], "--input-key differs from --key"),
    ([*JOB[:-2], "--master", "local[*]"], "is not spark.master"),
    ([*JOB[:-2], "--debug"], "'--debug' is not an option"),
    ([*JOB[:-2], "extra"], "'extra' is not an option"),
    (JOB[:6], "--key is missing"),
    (["query", "simple", "--input", "/etc/passwd", "--output", "/data/o", "--key", "k"],
     "is not a path under /data"),
    (["query", "simple", "--input", "/data/../etc/passwd", "--output", "/data/o", "--key", "k"],
     "not plain"),
    (["query", "simple", "--input", "/data/a", "--output", "/data//o", "--key", "k"],
     "normalised"),
    (["query", "simple", "--input", "/data/a", "--output", "/data/o", "--key", "../k"],
     "invalid key name"),
    ([*JOB[:-2], "--key", "again"], "--key is given twice"),
])
def test_a_job_the_enclave_must_not_run_is_refused(args: list[str], expected: str) -> None:
    with pytest.raises(UsageError, match=re.escape(expected)):
        check_enclave_job(args, MASTER)


RUN_APP = "/opt/cipherspark/apps/report.py"


def test_an_allowed_run_is_normalised() -> None:
    given = ["run", "--table=t=/data/t.parquet", "--column-key", "pii=name,age", "--key=k",
             "--table", "u=/data/u.cspk", RUN_APP, "--key", "not-ours", "--show"]
    # Options in a fixed order, --master added; the application's arguments untouched.
    assert check_enclave_job(given, MASTER) == (
        "run", "--key", "k", "--column-key", "pii=name,age", "--table", "t=/data/t.parquet",
        "--table", "u=/data/u.cspk", "--master", MASTER, RUN_APP, "--key", "not-ours", "--show")


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--key", "k", "/data/app.py"], "is not a path under /opt/cipherspark/apps"),
    (["run", "--key", "k", "/opt/cipherspark/apps/../../data/app.py"], "not plain"),
    (["run", "--key", "k", "/opt/cipherspark/apps/app.sh"], "is not a .py file"),
    (["run", "--key", "k"], "the application is missing"),
    (["run", RUN_APP], "--key is missing"),
    (["run", "--key", "../k", RUN_APP], "--key: "),
    (["run", "--key", "k", "--key", "j", RUN_APP], "--key is given twice"),
    (["run", "--key", "k", "--column-key", "pii", RUN_APP], "takes KEY=COLUMN"),
    (["run", "--key", "k", "--column-key", "../x=a", RUN_APP], "--column-key '../x=a'"),
    (["run", "--key", "k", "--table", "t=/etc/passwd", RUN_APP], "is not a path under /data"),
    (["run", "--key", "k", "--table", "/data/t", RUN_APP], "takes NAME=PATH"),
    (["run", "--key", "k", "--unsafe-plaintext-output", RUN_APP], "plaintext-output is not"),
    (["run", "--key", "k", "--unsafe-plaintext-parquet-input", RUN_APP], "turns a protection off"),
    (["run", "--key", "k", "--unsafe-skip-registry", RUN_APP], "turns a protection off"),
    (["run", "--key", "k", "--kms", "https://evil.example", RUN_APP], "--kms is not allowed"),
    (["run", "--key", "k", "--api-key-file", "/data/k", RUN_APP], "'--api-key-file' is not an"),
    (["run", "--key", "k", "--spark-properties", "/data/p", RUN_APP], "--spark-properties is not"),
    (["run", "--key", "k", "--master", "local[*]", RUN_APP], "is not spark.master"),
    (["run", "--key", "k", RUN_APP, "line\nbreak"], "has control characters"),
])
def test_a_run_the_enclave_must_not_run_is_refused(args: list[str], expected: str) -> None:
    with pytest.raises(UsageError, match=re.escape(expected)):
        check_enclave_job(args, MASTER)


# -- the properties reader --------------------------------------------------------------------


def test_properties_are_read_as_java_reads_them() -> None:
    text = ("# comment\n! also a comment\n"
            "spark.master=k8s\\://https\\://h\\:6443\n"
            "  spark.a : one\n"
            "spark.b two\\\n    three\n"
            "spark.c=\\u00e9\\t\\=x\n"
            "spark.d\\ key=v\n"
            "spark.e=\n")
    assert parse_properties(text) == {
        "spark.master": "k8s://https://h:6443", "spark.a": "one", "spark.b": "twothree",
        "spark.c": "é\t=x", "spark.d key": "v", "spark.e": ""}
    entries = {**DRIVER_PROPERTIES, "spark.x": " lead: space=#!\\"}
    assert parse_properties(store(entries)) == entries
    with pytest.raises(InputError, match="twice"):
        parse_properties("spark.a=1\nspark.a=2\n")


# -- the program itself, as the enclave runs it -----------------------------------------------


def fake_jdk(tmp_path: Path) -> Path:
    """A "java" that records its argv and environment next to itself."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys\n"
                    "with open(os.path.join(os.path.dirname(__file__), 'ran.json'), 'w') as f:\n"
                    "    json.dump({'argv': sys.argv, 'env': dict(os.environ)}, f)\n")
    java.chmod(0o755)
    return java.parent.parent


def run_launcher(config: EnclaveConfig, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = DEPLOY / "docker" / "launcher.py"
    return subprocess.run([sys.executable, "-I", "-B", str(script), *config.to_argv()],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_launcher_program_runs_the_plan_and_nothing_of_the_host(tmp_path: Path) -> None:
    import dataclasses

    config = dataclasses.replace(CONFIG, java_home=fake_jdk(tmp_path))
    done = run_launcher(config, {**EXECUTOR_ENV, **HOSTILE_ENV})
    assert done.returncode == 0, done.stderr
    ran = json.loads((config.java_home / "bin" / "ran.json").read_text())
    expected = executor_plan(config, EXECUTOR_ENV)
    assert ran["argv"][1:] == list(expected.argv[1:])
    # Exactly the plan's environment (the OS adds nothing to execve's).
    assert {k: v for k, v in ran["env"].items() if k != "LC_CTYPE"} == dict(expected.env)


def test_launcher_program_refuses_with_one_line(tmp_path: Path) -> None:
    import dataclasses

    config = dataclasses.replace(CONFIG, java_home=fake_jdk(tmp_path))
    done = run_launcher(config, {**EXECUTOR_ENV, "SPARK_EXECUTOR_CORES": "64 -javaagent:x"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("cipherspark enclave: the enclave refuses to start the executor")
    assert "Traceback" not in done.stderr
    assert not (config.java_home / "bin" / "ran.json").exists()


def test_launcher_program_runs_a_driver_from_the_files_config_names(tmp_path: Path) -> None:
    import dataclasses

    (tmp_path / "app-id").write_text("app-1\n")
    (tmp_path / "api-key").write_text("key-1\n")
    (tmp_path / "spark.properties").write_text(store({**DRIVER_PROPERTIES, **HOSTILE_PROPERTIES}))
    config = dataclasses.replace(
        CONFIG, java_home=fake_jdk(tmp_path), app_id_file=tmp_path / "app-id",
        api_key_file=tmp_path / "api-key", spark_properties=tmp_path / "spark.properties")
    plan = prepare_launch(config, DRIVER_ENV)
    assert plan.env["CIPHERSPARK_API_KEY"] == "key-1"
    done = run_launcher(config, {**DRIVER_ENV, **HOSTILE_ENV})
    assert done.returncode == 0, done.stderr
    assert "ignored Spark settings: " in done.stderr and "spark.jars" in done.stderr
    ran = json.loads((config.java_home / "bin" / "ran.json").read_text())
    assert ran["argv"][1:] == list(plan.argv[1:])
    assert "evil" not in json.dumps(ran).replace(str(tmp_path), "")


def test_the_measured_settings_round_trip_and_nothing_else_is_accepted() -> None:
    assert EnclaveConfig.from_argv(CONFIG.to_argv()) == CONFIG
    argv = list(CONFIG.to_argv())
    for bad, message in [
        ([*argv, "--kms-url=https://other:8443"], "given twice"),
        ([*argv, "--extra=1"], "unknown launcher argument --extra"),
        ([*argv, "executor"], "is not --NAME=VALUE"),
        ([a for a in argv if not a.startswith("--kms-ca=")], "missing: --kms-ca"),
        ([*argv, "--spark-conf=authenticate"], "spark.KEY=VALUE"),
        ([a if not a.startswith("--java-home=") else "--java-home=jdk" for a in argv],
         "absolute path"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            EnclaveConfig.from_argv(bad)
