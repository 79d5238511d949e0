"""The `chutes` command against the real suite: deploy examples/echo_chute.py with an API key and
with hotkey signing only, then read, list, share, delete chutes and manage keys.

Every command runs as a subprocess with its own config.ini (CHUTES_CONFIG_PATH), as a user would
run it; the hotkey is a real sr25519 keypair generated here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sr25519

from services.identity.signatures import ss58_of
from tests.conftest import CHUTES_SUITE, RunningSuite
from tests.test_chute_run import Recorded, start_http_server
from tests.test_identity import admin

ROOT = Path(__file__).resolve().parent.parent
CHUTES = str(Path(sys.executable).parent / "chutes")
EXAMPLE = ROOT / "examples" / "echo_chute.py"
DEPLOYED = re.compile(
    r"^Successfully deployed chute echo chute_id='(?P<id>[0-9a-f-]{36})' version=(?P<version>\S+) "
    r"invocations will be available soon!$",
    re.M,
)


@dataclass
class Account:
    username: str
    user_id: str
    api_key: str
    seed: str
    ss58: str


def new_account(suite: RunningSuite, prefix: str, balance: str = "100", image: bool = True) -> Account:
    seed = os.urandom(32)
    public, _ = sr25519.pair_from_seed(seed)
    username = prefix + uuid.uuid4().hex[:8]
    made = admin(
        suite, "create-user", "--username", username, "--hotkey", ss58_of(public), "--balance", balance
    )
    if image:
        admin(
            suite,
            "add-image",
            "--username",
            username,
            "--name",
            "cli-base",
            "--tag",
            "1.0",
            "--chutes-version",
            "0.6.9",
        )
    return Account(username, str(made["user_id"]), str(made["api_key"]), seed.hex(), ss58_of(public))


@dataclass
class Cli:
    """Runs `chutes` as `account`, configured by a config.ini in `home`."""

    gateway: str
    account: Account
    home: Path

    def __post_init__(self) -> None:
        self.config = self.home / "config.ini"
        self.write_config(self.account.ss58)

    def write_config(self, ss58: str, base_url: str | None = None) -> None:
        self.config.write_text(
            "[api]\n"
            f"base_url = {base_url if base_url is not None else self.gateway}\n"
            "[auth]\n"
            f"user_id = {self.account.user_id}\n"
            f"username = {self.account.username}\n"
            f"hotkey_seed = {self.account.seed}\n"
            "hotkey_name = default\n"
            f"hotkey_ss58address = {ss58}\n"
        )

    def __call__(
        self,
        *args: str,
        api_key: str | None = None,
        cwd: Path = ROOT,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
        env.update(HOME=str(self.home), CHUTES_CONFIG_PATH=str(self.config))
        env["CHUTES_USERNAME"] = self.account.username  # the example chute's owner and image
        if api_key:
            env["CHUTES_API_KEY"] = api_key
        env.update(extra_env or {})
        return subprocess.run(
            [CHUTES, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )

    def ok(self, *args: str, **kwargs: object) -> str:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 0, f"chutes {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def fails(self, *args: str, **kwargs: object) -> str:
        result = self(*args, **kwargs)  # type: ignore[arg-type]
        assert result.returncode == 1, f"chutes {' '.join(args)}: {result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result.stderr


@pytest.fixture(scope="module")
def owner(suite: RunningSuite) -> Account:
    return new_account(suite, "cli")


@pytest.fixture(scope="module")
def friend(suite: RunningSuite) -> Account:
    return new_account(suite, "pal", image=False)


@pytest.fixture
def cli(suite: RunningSuite, owner: Account, tmp_path: Path) -> Cli:
    return Cli(suite.gateway, owner, tmp_path)


def echo_id(account: Account) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{account.username}::chute::echo"))


def test_deploy_with_an_api_key_then_read_list_share_and_delete(
    cli: Cli, owner: Account, friend: Account, suite: RunningSuite, tmp_path: Path
) -> None:
    key = owner.api_key
    out = cli.ok("deploy", "examples/echo_chute:chute", "--accept-fee", "--yes", api_key=key)
    deployed = DEPLOYED.search(out)
    assert deployed, out
    chute_id = deployed["id"]
    assert chute_id == echo_id(owner)

    shown = json.loads(cli.ok("chutes", "get", "echo", api_key=key))
    assert shown["chute_id"] == chute_id and shown["version"] == deployed["version"]
    assert shown["image"]["name"] == "cli-base" and shown["user"]["username"] == owner.username
    assert [c["function"] for c in shown["cords"]] == ["echo", "count", "greet"]
    assert [c["stream"] for c in shown["cords"]] == [False, True, False]
    greet = shown["cords"][2]["input_schema"]
    assert greet["required"] == ["greeting"] and "Greeting" in greet["definitions"]
    assert shown["node_selector"]["gpu_count"] == 1

    listed = cli.ok("chutes", "list", "--name", "echo", api_key=key)
    assert "Found 1 matching chutes, displaying 1" in listed
    assert chute_id in listed and f"{owner.username}-echo" in listed and "cold" in listed
    assert "echo / stream=False / POST /echo" in listed and "count / stream=True / POST /count" in listed

    # Sharing: the friend can read the chute only while it is shared.
    (tmp_path / "friend").mkdir()
    as_friend = Cli(suite.gateway, friend, tmp_path / "friend")
    hidden = as_friend.fails("chutes", "get", chute_id, api_key=friend.api_key)
    assert "404" in hidden and "Chute not found" in hidden
    shared = cli.ok("share", "--chute-id", "echo", "--user-id", friend.username, api_key=key)
    assert shared.strip() == f"Successfully shared chute.name='echo' with user.username='{friend.username}'"
    assert json.loads(as_friend.ok("chutes", "get", chute_id, api_key=friend.api_key))["name"] == "echo"
    unshared = cli.ok("share", "--chute-id", chute_id, "--user-id", friend.user_id, "--remove", api_key=key)
    assert unshared.strip().endswith("(if share exists)")
    as_friend.fails("chutes", "get", chute_id, api_key=friend.api_key)

    # The same code again is refused (409), and the API's detail is what the user sees.
    again = cli.fails("deploy", "examples/echo_chute:chute", "--accept-fee", "--yes", api_key=key)
    assert "409" in again and "already exists" in again

    assert "Must use chute UUID to delete." in cli.fails("chutes", "delete", "echo", "--yes", api_key=key)
    assert cli.ok("chutes", "delete", chute_id, "--yes", api_key=key).strip() == (
        f"Successfully deleted chute {chute_id}"
    )
    assert "404" in cli.fails("chutes", "get", chute_id, api_key=key)


def test_deploy_and_manage_with_hotkey_signing_only(cli: Cli, owner: Account) -> None:
    # The real CLI's way: `module:chute` from the chute file's directory, every request signed.
    out = cli.ok("deploy", "echo_chute:chute", "--accept-fee", "--yes", cwd=ROOT / "examples")
    deployed = DEPLOYED.search(out)
    assert deployed and deployed["id"] == echo_id(owner), out
    chute_id = deployed["id"]

    assert json.loads(cli.ok("chutes", "get", chute_id))["name"] == "echo"
    assert chute_id in cli.ok("chutes", "list")

    made = cli.ok("keys", "create", "--name", "laptop", "--admin")
    key = json.loads(made[: made.rindex("}") + 1])
    assert key["secret_key"].startswith("cpk_") and key["name"] == "laptop" and key["admin"] is True
    assert f'"Authorization: Basic {key["secret_key"]}"' in made
    listed = cli.ok("keys", "list")
    assert key["api_key_id"] in listed and "laptop" in listed
    assert json.loads(cli.ok("keys", "get", key["api_key_id"]))["name"] == "laptop"
    # The new key works as CHUTES_API_KEY, then stops working once deleted.
    assert chute_id in cli.ok("chutes", "list", api_key=key["secret_key"])
    assert cli.ok("keys", "delete", key["api_key_id"], "--yes").strip() == (
        f"Successfully deleted api_key {key['api_key_id']}"
    )
    assert key["api_key_id"] not in cli.ok("keys", "list")

    scoped = cli.ok("keys", "create", "--name", "reader", "--chute-ids", chute_id, "--action", "read")
    assert json.loads(scoped[: scoped.rindex("}") + 1])["scopes"] == [
        {"object_type": "chutes", "object_id": chute_id, "action": "read"}
    ]

    assert cli.ok("chutes", "delete", chute_id, "--yes").strip() == f"Successfully deleted chute {chute_id}"


def test_refusals_are_reported_with_the_api_detail(cli: Cli, suite: RunningSuite, tmp_path: Path) -> None:
    missing = cli.fails(
        "deploy", "examples/echo_chute:chute", "--accept-fee", extra_env={"CHUTES_IMAGE": "no/pe:1"}
    )
    assert "Image 'no/pe:1' is not available to be used (yet)!" in missing

    fresh = new_account(suite, "fee")
    home = tmp_path / "fresh"
    home.mkdir()
    as_fresh = Cli(suite.gateway, fresh, home)
    notice = as_fresh.fails("deploy", "examples/echo_chute:chute", "--yes")
    assert "402" in notice and "DEPLOYMENT FEE NOTICE" in notice

    # A hotkey address that does not match the seed: the server refuses the signature.
    cli.write_config(fresh.ss58)
    assert "Invalid request signature" in cli.fails("chutes", "list")
    # No URL anywhere: the command says what to set instead of calling the production API.
    cli.write_config(cli.account.ss58, base_url="")
    assert "no API URL: set CHUTES_API_URL" in cli.fails("chutes", "list")
    assert "Found" in cli.ok("chutes", "list", extra_env={"CHUTES_API_URL": suite.gateway})


def test_warmup_and_jobs_print_what_the_server_answers(cli: Cli, owner: Account) -> None:
    # The server's detail is shown: a chute and a job the caller has not got (the happy paths:
    # test_runtime.py for warmup, test_jobs.py for jobs).
    warmup = cli.fails("warmup", "no-such-chute", api_key=owner.api_key)
    assert "404" in warmup and "Chute not found" in warmup
    job = cli.fails("jobs", "get", str(uuid.uuid4()), api_key=owner.api_key)
    assert "404" in job and "Job not found" in job
    signed = cli.fails("jobs", "get", str(uuid.uuid4()))
    assert "need an API key" in signed


# ---- the bytes on the wire, against a recording server -------------------------------------------

DEPLOY_KEYS = [
    "name", "tagline", "readme", "logo_id", "image", "public", "standard_template", "node_selector",
    "filename", "ref_str", "code", "concurrency", "max_instances", "scaling_threshold",
    "shutdown_after_seconds", "allow_external_egress", "encrypted_fs", "tee", "lock_modules", "revision",
    "cords", "jobs",
]  # fmt: skip
SIGNED_HEADERS = ["X-Chutes-UserID", "X-Chutes-Hotkey", "X-Chutes-Nonce", "X-Chutes-Signature"]


def fake_api(request: Recorded, _: str) -> tuple[int, str, bytes]:
    if request.path.startswith("/images/"):
        answer: object = {"image_id": "i", "status": "built and pushed", "public": True}
    elif request.path == "/users/me":
        answer = {"permissions_bitmask": 2048, "permissions": []}
    elif request.path.startswith("/chutes/?accept_fee="):
        answer = {"chute_id": "c-1", "version": "v-1"}
    else:
        answer = {"total": 0, "items": [], "cord_refs": {}}
    return 200, "application/json", json.dumps(answer).encode()


def verify(request: Recorded, account: Account, tail: str) -> None:
    headers = {name.lower(): value for name, value in request.headers.items()}
    order = [name for name in request.headers if name in SIGNED_HEADERS]
    assert order == SIGNED_HEADERS, request.headers
    assert headers["x-chutes-userid"] == account.user_id and headers["x-chutes-hotkey"] == account.ss58
    assert "authorization" not in headers
    message = f"{account.ss58}:{headers['x-chutes-nonce']}:{tail}".encode()
    public, _ = sr25519.pair_from_seed(bytes.fromhex(account.seed))
    assert sr25519.verify(bytes.fromhex(headers["x-chutes-signature"]), message, public)


def test_deploy_and_list_requests_match_the_published_cli(tmp_path: Path) -> None:
    seed = os.urandom(32)
    public, _ = sr25519.pair_from_seed(seed)
    account = Account("wireuser", str(uuid.uuid4()), "", "0x" + seed.hex(), ss58_of(public))
    recorder, server = start_http_server(fake_api)
    try:
        cli = Cli(recorder.url, account, tmp_path)
        out = cli.ok("deploy", "examples/echo_chute:chute", "--accept-fee", "--public", "--yes")
        assert (
            "Successfully deployed chute echo chute_id='c-1' version=v-1 invocations will be available soon!"
            in out
        )
        cli.ok("chutes", "list")
        cli.ok("chutes", "list", "--include-public", "--name", "echo", "--limit", "5", "--page", "1")
    finally:
        server.shutdown()
        server.server_close()

    image, me, deploy, listing, filtered = recorder.requests
    account.seed = account.seed.removeprefix("0x")  # the config may carry 0x; the key is the same
    assert (image.method, image.path) == ("GET", "/images/wireuser/cli-base:1.0")  # verbatim ref
    verify(image, account, "images")
    assert (me.method, me.path) == ("GET", "/users/me")
    verify(me, account, "me")

    assert (deploy.method, deploy.path) == ("POST", "/chutes/?accept_fee=true")
    verify(deploy, account, hashlib.sha256(deploy.body).hexdigest())
    assert deploy.headers["Content-Type"] == "application/json" and deploy.headers["X-Chutes-Version"]
    body = json.loads(deploy.body)
    assert list(body) == DEPLOY_KEYS
    assert deploy.body == json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()  # compact
    assert (body["name"], body["image"], body["public"], body["logo_id"]) == (
        "echo",
        "wireuser/cli-base:1.0",
        True,
        None,
    )
    assert (body["filename"], body["ref_str"]) == ("echo_chute.py", "echo_chute:chute")
    assert body["code"] == EXAMPLE.read_text()
    assert list(body["node_selector"]) == [
        "gpu_count", "min_vram_gb_per_gpu", "max_hourly_price_per_gpu", "include", "exclude"
    ]  # fmt: skip
    assert list(body["cords"][0]) == [
        "method", "path", "public_api_path", "public_api_method", "stream", "function", "input_schema",
        "output_schema", "output_content_type", "minimal_input_schema", "passthrough",
    ]  # fmt: skip
    assert body["jobs"] == []

    assert listing.path == "/chutes/?include_public=False&limit=25&page=0"
    verify(listing, account, "chutes")
    assert filtered.path == "/chutes/?include_public=True&name=echo&limit=5&page=1"


def fake_jobs_and_warmup(request: Recorded, _: str) -> tuple[int, str, bytes]:
    if request.path == "/chutes/warmup/echo":
        events = [
            {"status": "cold", "log": "waiting for instances"},
            {"status": "hot", "log": "chute is hot"},
        ]
        return (
            200,
            "text/event-stream",
            b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events),
        )
    if request.path == "/jobs/j-1/download/f-1":
        return 200, "application/octet-stream", bytes(range(256)) * 4096
    if request.path.startswith("/jobs/"):
        return 200, "application/json", json.dumps({"job_id": "j-1", "status": "pending"}).encode()
    return 404, "application/json", b'{"detail": "Not Found"}'


def test_warmup_stream_job_creation_and_download(tmp_path: Path) -> None:
    seed = os.urandom(32)
    public, _ = sr25519.pair_from_seed(seed)
    account = Account("wireuser", str(uuid.uuid4()), "cpk_test", seed.hex(), ss58_of(public))
    recorder, server = start_http_server(fake_jobs_and_warmup)
    try:
        cli = Cli(recorder.url, account, tmp_path)
        assert cli.ok("warmup", "echo").splitlines() == ["cold: waiting for instances", "hot: chute is hot"]
        created = json.loads(cli.ok("jobs", "create", "c-1", "train", "--data", '{"epochs": 2}'))
        assert created["job_id"] == "j-1"
        target = tmp_path / "weights.bin"
        saved = cli.ok("jobs", "download", "j-1", "f-1", "-o", str(target), api_key=account.api_key)
        assert saved.strip() == f"Saved {256 * 4096} bytes to {target}"
        assert target.read_bytes() == bytes(range(256)) * 4096
        assert "404: Not Found" in cli.fails("warmup", "nothing")
    finally:
        server.shutdown()
        server.server_close()

    warmup, create, download, _ = recorder.requests
    verify(warmup, account, "chutes")
    assert (create.method, create.path, create.body) == ("POST", "/jobs/c-1/train", b'{"epochs":2}')
    verify(create, account, hashlib.sha256(create.body).hexdigest())
    assert download.headers["Authorization"] == "cpk_test" and "X-Chutes-Signature" not in download.headers


def test_the_documented_example_deploys_unchanged(suite: RunningSuite, tmp_path: Path) -> None:
    """Seed 002's complete example, as a file, deploys through the gateway to the registry. Its
    `Image(username="myuser", ...)` is found by the SDK's uid: the image is registered (public)
    under that user, as an operator would, and the chute is deployed by someone else."""
    for setup in (
        ["create-user", "--username", "myuser"],
        ["add-image", "--username", "myuser", "--name", "my-chute", "--tag", "1.0", "--public",
         "--chutes-version", "0.6.9"],
    ):  # fmt: skip
        done = subprocess.run([CHUTES_SUITE, "admin", *setup], env=suite.env, capture_output=True, text=True)
        assert done.returncode == 0 or "already" in done.stderr, done.stderr  # a database reused by a rerun
    deployer = new_account(suite, "seed", image=False)
    cli = Cli(suite.gateway, deployer, tmp_path)
    out = cli.ok(
        "deploy",
        "seed_example:chute",
        "--accept-fee",
        "--yes",
        api_key=deployer.api_key,
        cwd=ROOT / "tests" / "chute_files",
    )
    chute_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{deployer.username}::chute::text-generator"))
    assert f"chute_id='{chute_id}'" in out
    shown = json.loads(cli.ok("chutes", "get", chute_id, api_key=deployer.api_key))
    image_uid = str(uuid.uuid5(uuid.NAMESPACE_OID, "myuser/my-chute:1.0"))
    assert shown["image"]["image_id"] == image_uid
    assert (shown["tagline"], shown["max_instances"], shown["concurrency"]) == (
        "Generate text with transformers",
        3,
        4,
    )
    cords = {c["function"]: c for c in shown["cords"]}
    assert set(cords) == {"generate", "health"}
    cord = cords["generate"]
    assert (cord["public_api_path"], cord["function"]) == ("/generate", "generate")
    assert cord["minimal_input_schema"]["required"] == ["input_args"]
    code = (ROOT / "tests" / "chute_files" / "seed_example.py").read_text()
    assert (
        httpx.get(f"{suite.gateway}/chutes/code/{chute_id}", headers={"Authorization": deployer.api_key}).text
        == code
    )
