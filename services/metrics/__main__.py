"""`python -m services.metrics`: serve the metrics service until SIGTERM."""

from services.kit.server import run
from services.metrics.service import SPEC

run(SPEC)
