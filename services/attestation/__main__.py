"""`python -m services.attestation`: serve the attestation service until SIGTERM."""

from services.attestation.service import SPEC
from services.kit.server import run

run(SPEC)
