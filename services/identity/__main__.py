"""`python -m services.identity`: serve the identity service until SIGTERM."""

from services.identity.service import SPEC
from services.kit.server import run

run(SPEC)
