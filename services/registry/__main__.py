"""`python -m services.registry`: serve the registry service until SIGTERM."""

from services.registry.service import SPEC
from services.kit.server import run

run(SPEC)
