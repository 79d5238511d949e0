"""`python -m services.jobs`: serve the jobs service until SIGTERM."""

from services.jobs.service import SPEC
from services.kit.server import run

run(SPEC)
