#!/bin/bash
# cipherspark runtime image entrypoint (tdx and simulated overlays): Spark on Kubernetes starts
# pods with "driver ..." or "executor" (Spark's own kubernetes/dockerfiles/spark/entrypoint.sh
# contract); anything else runs as given. SGX pods do not use it: their enclave runs the measured
# launcher.py, which builds these commands itself from checked values (enclave-entrypoint.sh).
set -euo pipefail

# KMS credentials arrive as mounted files (Secret cipherspark-kms-credentials), never in the pod
# spec. The cipherspark library reads them from the process environment, so they are exported here,
# inside the container, and nowhere else.
if [[ -n "${CIPHERSPARK_APP_ID_FILE:-}" && -r "${CIPHERSPARK_APP_ID_FILE}" ]]; then
  CIPHERSPARK_APP_ID="$(<"${CIPHERSPARK_APP_ID_FILE}")"
  export CIPHERSPARK_APP_ID
fi
if [[ -n "${CIPHERSPARK_API_KEY_FILE:-}" && -r "${CIPHERSPARK_API_KEY_FILE}" ]]; then
  CIPHERSPARK_API_KEY="$(<"${CIPHERSPARK_API_KEY_FILE}")"
  export CIPHERSPARK_API_KEY
fi

SPARK_HOME="${SPARK_HOME:?SPARK_HOME must be set by the image}"
JAVA_HOME="${JAVA_HOME:?JAVA_HOME must be set by the image}"
SPARK_CLASSPATH="${SPARK_CONF_DIR:-${SPARK_HOME}/conf}:${SPARK_HOME}/jars/*"
if [[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]]; then
  SPARK_CLASSPATH="${SPARK_CLASSPATH}:${SPARK_EXTRA_CLASSPATH}"
fi
SPARK_EXECUTOR_JAVA_OPTS=()
for v in "${!SPARK_JAVA_OPT_@}"; do
  SPARK_EXECUTOR_JAVA_OPTS+=("${!v}")
done
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-/usr/local/bin/python3}"

case "${1:-}" in
  driver)
    shift 1
    exec "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift 1
    exec "${JAVA_HOME}/bin/java" \
      "${SPARK_EXECUTOR_JAVA_OPTS[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "${SPARK_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec "$@"
    ;;
esac
