import sys

from otel_agent.cli import main

sys.exit(main())
