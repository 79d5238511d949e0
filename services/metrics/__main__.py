"""`python -m services.metrics`: serve the metrics service until SIGTERM."""

from services.metrics.service import SPEC
from services.kit.server import run

run(SPEC)
