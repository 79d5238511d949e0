"""The trust roots an operator enables, from `CHUTES_TEE_*` settings.

- `tdx`: on when `CHUTES_TEE_TDX_COLLATERAL` names a collateral file or folder
  (services/attestation/tdx.py). `CHUTES_TEE_TDX_MEASUREMENTS` is the JSON allow-list of MRTD and
  RTMRs (services/attestation/measurements.py); empty, the default, allows no quote: an operator
  must say which guest images they trust. `CHUTES_TEE_TDX_TCB_STATUSES` (comma-separated) lists
  the accepted TCB statuses (default `UpToDate,SWHardeningNeeded`).
- `software`: on only when `CHUTES_TEE_SOFTWARE` is true (services/attestation/software_tee.py).
  Its node keys are the ones nodes registered (passed in by the service) plus any in
  `CHUTES_TEE_SOFTWARE_NODE_KEYS` (`node_id=<64 hex>,...`); `CHUTES_TEE_SOFTWARE_MEASUREMENTS` is
  an optional JSON allow-list of `code` and `runtime` (unset: any code a registered node ran).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.attestation.measurements import parse_allow_list
from services.attestation.software_tee import SoftwareTrust
from services.attestation.tdx import DEFAULT_TCB_STATUSES, TdxTrust, load_collateral


class TeeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHUTES_TEE_", extra="ignore")

    tdx_collateral: Path | None = None
    tdx_measurements: str = "[]"
    tdx_tcb_statuses: str = ",".join(sorted(DEFAULT_TCB_STATUSES))
    software: bool = False
    software_node_keys: str = ""
    software_measurements: str | None = None


@dataclass(frozen=True)
class Trust:
    """Every trust root a verdict may name; `tdx` None means no TDX collateral is configured."""

    tdx: TdxTrust | None = None
    software: SoftwareTrust = field(default_factory=SoftwareTrust)


def parse_node_keys(text: str) -> dict[str, bytes]:
    """`node_id=<64 hex>,...` to node id -> 32 raw public-key bytes; ValueError if malformed."""
    keys: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        node_id, sep, hex_key = item.partition("=")
        key = bytes.fromhex(hex_key.strip()) if sep else b""
        if not node_id.strip() or len(key) != 32:
            raise ValueError(f"node key {item!r} is not node_id=<64 hex characters>")
        keys[node_id.strip()] = key
    return keys


def load_trust(
    settings: TeeSettings | None = None, registered_node_keys: Mapping[str, bytes] | None = None
) -> Trust:
    """The trust roots the settings enable (read once at startup: collateral is parsed here)."""
    settings = settings or TeeSettings()
    tdx = None
    if settings.tdx_collateral is not None:
        tdx = TdxTrust(
            collateral=load_collateral(settings.tdx_collateral),
            allowed_measurements=parse_allow_list(settings.tdx_measurements),
            tcb_statuses=frozenset(
                status.strip() for status in settings.tdx_tcb_statuses.split(",") if status.strip()
            ),
        )
    software = SoftwareTrust(
        enabled=settings.software,
        node_keys={**parse_node_keys(settings.software_node_keys), **(registered_node_keys or {})},
        allowed_measurements=(
            None
            if settings.software_measurements is None
            else parse_allow_list(settings.software_measurements)
        ),
    )
    return Trust(tdx=tdx, software=software)
