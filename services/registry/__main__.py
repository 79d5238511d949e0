"""`python -m services.registry`: serve the registry service until SIGTERM."""

from services.kit.server import run
from services.registry.service import SPEC

run(SPEC)
