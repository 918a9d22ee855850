#!/bin/sh
# sgx overlay: run the image entrypoint (and so the Spark driver or executor) inside the Gramine
# enclave signed at image build time. Arguments are Spark's ("driver ..." / "executor").
cd /opt/cipherspark-sgx || exit 1
exec gramine-sgx cipherspark /opt/cipherspark/entrypoint.sh "$@"
