#!/bin/sh
# sgx overlay: start the Gramine enclave signed at image build time (outside the enclave: this
# script is the host's side and protects nothing). Spark's arguments ("driver ..." / "executor")
# are deliberately not passed on: the signed manifest fixes the enclave's command line (its
# loader.argv runs the measured launcher /opt/cipherspark/launcher.py with the measured KMS URL
# and CA), and Gramine would discard them anyway. The launcher takes the pod's role and Spark's
# values from the few environment variables the manifest lets through, and checks them.
# See docs/deploy-kubernetes.md, "What the host can and cannot influence".
cd /opt/cipherspark-sgx || exit 1
exec gramine-sgx cipherspark
