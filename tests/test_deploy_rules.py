"""The deploy pipeline's rules one at a time, without a database (services/registry/deploy/).

The scenarios through the gateway (test_registry.py) show the rules in the running suite; these
pin each rule's boundary and message alone, in milliseconds.
"""

from __future__ import annotations

from typing import Any

import pytest

from chutes.chute import NodeSelector
from chutes.registry.v1 import registry_pb2
from services.kit.caller import Caller
from services.kit.errors import (
    AlreadyExists,
    InvalidArgument,
    PaymentRequired,
    PermissionDenied,
    TooManyRequests,
    ValidationFailed,
)
from services.kit.roles import Role
from services.registry.deploy import rules
from services.registry.deploy.request import validate
from services.registry.subnets import subnet_of


def caller(
    *roles: Role, username: str = "alice", balance: float = 100.0, netuids: tuple[int, ...] = ()
) -> Caller:
    bitmask = 0
    for role in roles:
        bitmask |= role
    return Caller(
        user_id="u1", username=username, permissions_bitmask=bitmask, balance=balance, netuids=netuids
    )


def args(**fields: Any) -> registry_pb2.ChuteArgs:
    values: dict[str, Any] = {
        "name": "echo",
        "image": "alice/base:1.0",
        "code": "x = 1\n",
        "filename": "echo.py",
        "ref_str": "echo:chute",
        "public": False,
        "node_selector": registry_pb2.NodeSelector(gpu_count=1, min_vram_gb_per_gpu=16),
        "cords": [registry_pb2.Cord(path="/echo", function="echo", method="POST")],
    }
    values.update(fields)
    return registry_pb2.ChuteArgs(**values)


def test_a_valid_request_yields_its_node_selector() -> None:
    assert validate(args()).gpu_count == 1


def test_validation_lists_every_problem_at_once() -> None:
    with pytest.raises(ValidationFailed) as failed:
        validate(args(name="ab", filename="Echo.py", concurrency=300, max_instances=0))
    assert [v.loc for v in failed.value.violations] == [
        ("body", "name"),
        ("body", "filename"),
        ("body", "concurrency"),
        ("body", "max_instances"),
    ]
    assert failed.value.violations[0].type == "string_too_short"


def test_missing_fields_are_reported_as_fastapi_does() -> None:
    with pytest.raises(ValidationFailed) as failed:
        validate(registry_pb2.ChuteArgs(name="echo"))
    missing = {v.loc[-1] for v in failed.value.violations if v.type == "missing"}
    assert missing == {"image", "code", "filename", "ref_str", "public", "node_selector"}


def test_rule_1_subnet_chutes_need_that_subnets_admin() -> None:
    subnet = subnet_of("my-affine-model")
    assert subnet is not None
    with pytest.raises(PermissionDenied, match="netuid=120"):
        rules.rule_1_subnet_membership(caller(), subnet)
    with pytest.raises(PermissionDenied):
        rules.rule_1_subnet_membership(caller(Role.SUBNET_ADMIN, netuids=(44,)), subnet)
    rules.rule_1_subnet_membership(caller(Role.SUBNET_ADMIN, netuids=(120,)), subnet)
    rules.rule_1_subnet_membership(caller(Role.UNLIMITED_DEV), subnet)
    rules.rule_1_subnet_membership(caller(), None)


def test_rule_3_tee_needs_unlimited_dev() -> None:
    with pytest.raises(InvalidArgument, match="TEE"):
        rules.rule_3_tee_allowed(caller(), True)
    rules.rule_3_tee_allowed(caller(Role.UNLIMITED_DEV), True)


def test_rule_4_daily_limit_and_its_exemptions() -> None:
    rules.rule_4_daily_limit(rules.DAILY_DEPLOYMENTS - 1)
    with pytest.raises(TooManyRequests, match="24"):
        rules.rule_4_daily_limit(rules.DAILY_DEPLOYMENTS)
    assert rules.rule_4_daily_limit_applies(caller())
    assert not rules.rule_4_daily_limit_applies(caller(username="chutes"))
    assert not rules.rule_4_daily_limit_applies(caller(Role.UNLIMITED_DEV))


@pytest.mark.parametrize("name", ["my-TEE-model", "modeltee", "ModelTee"])
def test_rule_6_tee_names_are_reserved(name: str) -> None:
    with pytest.raises(InvalidArgument, match="reserved"):
        rules.rule_6_tee_names(name, tee=False)
    rules.rule_6_tee_names(name, tee=True)


def test_rule_6_lowercase_tee_inside_a_name_is_fine() -> None:
    rules.rule_6_tee_names("steep-model", tee=False)


def test_rule_7_public_needs_its_role() -> None:
    with pytest.raises(InvalidArgument, match="no longer supports public"):
        rules.rule_7_public_needs_role(caller(), True)
    rules.rule_7_public_needs_role(caller(Role.PUBLIC_MODEL_DEPLOYMENT), True)
    rules.rule_7_public_needs_role(caller(), False)


def test_rule_8_image_visible_and_public_for_public_chutes() -> None:
    with pytest.raises(InvalidArgument, match="image not found"):
        rules.rule_8_image(None, False)
    with pytest.raises(AlreadyExists):
        rules.rule_8_image({"public": False}, True)
    assert rules.rule_8_image({"public": True}, True) == {"public": True}


def test_rule_9_version_is_the_real_uuid5() -> None:
    image = {"image_id": "i", "patch_version": "initial"}
    # uuid5(NAMESPACE_OID, "i:initial:code"), as the real API computes it.
    assert rules.rule_9_version(image, "code") == "ff97170d-b1c0-5c0c-aaea-9887d8cdee68"
    assert rules.rule_9_version(image, "code") != rules.rule_9_version(image, "code2")


def test_rule_10_identical_redeploy_is_a_conflict() -> None:
    existing = {"version": "v1", "public": False}
    with pytest.raises(AlreadyExists, match="already exists"):
        rules.rule_10_not_identical(existing, "echo", "v1", False)
    rules.rule_10_not_identical(existing, "echo", "v2", False)
    rules.rule_10_not_identical(existing, "echo", "v1", True)
    rules.rule_10_not_identical(None, "echo", "v1", False)


def test_rule_11_no_egress_for_affine_chutes() -> None:
    assert rules.rule_11_egress(args(allow_external_egress=True))
    assert not rules.rule_11_egress(args(name="my-affine", allow_external_egress=True))
    assert not rules.rule_11_egress(args())


def test_rule_12_node_selector_limits() -> None:
    with pytest.raises(InvalidArgument, match="exclude more than 5"):
        rules.rule_12_node_selector_limits(
            NodeSelector(exclude=["a100", "h100", "h200", "l40s", "a6000", "a10"])
        )
    with pytest.raises(PermissionDenied, match="consumer GPUs"):
        rules.rule_12_node_selector_limits(NodeSelector(include=["4090"]))
    with pytest.raises(InvalidArgument, match="differ too much in price"):
        rules.rule_12_node_selector_limits(NodeSelector(include=["a10", "b200"]))
    rules.rule_12_node_selector_limits(NodeSelector(gpu_count=1))


def test_rule_13_fee_must_be_accepted_and_covered() -> None:
    selector = NodeSelector(gpu_count=1, include=["a100"])
    with pytest.raises(PaymentRequired, match="DEPLOYMENT FEE NOTICE"):
        rules.rule_13_fee(caller(), selector, new_chute=True, accept_fee=False)
    rules.rule_13_fee(caller(), selector, new_chute=True, accept_fee=True)
    with pytest.raises(PaymentRequired, match="does not cover"):
        rules.rule_13_fee(caller(balance=0.01), selector, new_chute=True, accept_fee=True)
    with pytest.raises(PaymentRequired, match="does not cover"):  # also on redeploys, as the real API
        rules.rule_13_fee(caller(balance=0.0), selector, new_chute=False, accept_fee=False)
    rules.rule_13_fee(caller(Role.FREE_ACCOUNT, balance=0.0), selector, new_chute=True, accept_fee=False)


def test_rule_14_reserved_gpus_are_excluded_by_default() -> None:
    settled = rules.rule_14_reserved_gpus(NodeSelector(gpu_count=1), caller())
    assert set(settled.exclude or []) == rules.RESERVED_GPUS
    with pytest.raises(PermissionDenied, match="requires approval"):
        rules.rule_14_reserved_gpus(NodeSelector(include=["b200"], exclude=["a100"]), caller())
    unlimited = rules.rule_14_reserved_gpus(NodeSelector(include=["b200"]), caller(Role.UNLIMITED_DEV))
    assert unlimited.include == ["b200"]


def test_rule_15_vllm_needs_a_revision() -> None:
    with pytest.raises(InvalidArgument, match="revision"):
        rules.rule_15_vllm_revision("vllm", args())
    rules.rule_15_vllm_revision("vllm", args(revision="a" * 40))
    rules.rule_15_vllm_revision(None, args())


def test_rule_17_sdk_version_gate() -> None:
    with pytest.raises(InvalidArgument, match="too old"):
        rules.rule_17_sdk_version(caller(), {"chutes_version": "0.3.60"})
    with pytest.raises(InvalidArgument, match="unknown"):
        rules.rule_17_sdk_version(caller(), {"chutes_version": None})
    rules.rule_17_sdk_version(caller(), {"chutes_version": "0.3.61"})
    rules.rule_17_sdk_version(caller(username="chutes"), {"chutes_version": None})
    assert rules.version_tuple("0.6.9rc1") == (0, 6, 9)


def test_rule_18_immutable_chutes_cannot_be_redeployed() -> None:
    with pytest.raises(PermissionDenied, match="immutable"):
        rules.rule_18_mutable({"immutable": True})
    rules.rule_18_mutable({"immutable": False})


def test_rule_19_code_name_id_and_slug() -> None:
    with pytest.raises(InvalidArgument, match="does not parse"):
        rules.rule_19_code_parses("def (:\n")
    with pytest.raises(InvalidArgument, match="invalid chute name"):
        rules.rule_19_name("bad name!")
    assert rules.rule_19_chute_id("alice", "echo") != rules.rule_19_chute_id("alice", "Echo")
    assert rules.rule_19_slug_base("Alice", "My Echo!") == "alice-my-echo"


def test_rule_20_cords_xor_jobs() -> None:
    with pytest.raises(InvalidArgument, match="at least one cord"):
        rules.rule_20_cords_or_jobs(args(cords=[]))
    with pytest.raises(InvalidArgument, match="not both"):
        rules.rule_20_cords_or_jobs(args(jobs=[registry_pb2.JobDefinition(name="train")]))
    rules.rule_20_cords_or_jobs(args())
