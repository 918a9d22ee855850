"""The application file spark-submit runs in the driver pod: the cipherspark command line."""

import sys

from cipherspark.cli import main

sys.exit(main())
