"""`chutes run`: a chute file served over HTTP by the real command, and a job run end to end.

The chute files are tests/chute_files/run_*.py; they run on a CPU. Cords are called over HTTP
(plain, streaming, pydantic input, passthrough to an upstream server started here), hooks record
their order in a file, and the job reports to a small server playing the job API
(POST result -> output_storage_urls, multipart PUT uploads, PUT {"status": "done"}).
"""

from __future__ import annotations

import email.policy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CHUTES = str(Path(sys.executable).parent / "chutes")
FILES = "tests/chute_files"


# ---- small HTTP servers the chute talks to --------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpRecorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)


Answer = Callable[[Recorded, str], tuple[int, str, bytes]]


def start_http_server(answer: Answer) -> tuple[HttpRecorder, ThreadingHTTPServer]:
    """A threaded HTTP server answering with `answer(request, base_url)` and recording requests."""
    port = free_port()
    recorder = HttpRecorder(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = Recorded(self.command, self.path, dict(self.headers), self.rfile.read(length))
            recorder.requests.append(request)
            status, content_type, body = answer(request, recorder.url)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return recorder, server


@pytest.fixture
def serve_http() -> Iterator[Callable[[Answer], HttpRecorder]]:
    """Start recording HTTP servers (see start_http_server); stopped after the test."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> HttpRecorder:
        recorder, server = start_http_server(answer)
        servers.append(server)
        return recorder

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def upstream_answer(request: Recorded, _: str) -> tuple[int, str, bytes]:
    if request.path == "/v1/lines":
        return 200, "text/plain", b"line 0\nline 1\nline 2\n"
    if request.path == "/v1/upstream":
        payload = {"method": request.method, "upstream": json.loads(request.body or b"null")}
        return 200, "application/json", json.dumps(payload).encode()
    return 404, "application/json", b'{"detail": "Not Found"}'


# ---- running `chutes run` ------------------------------------------------------------------------


@dataclass
class ChuteProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def start_chute(ref: str, env: dict[str, str], tmp_path: Path, *extra: str) -> ChuteProcess:
    port = free_port()
    log = tmp_path / f"chute-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [CHUTES, "run", ref, "--host", "127.0.0.1", "--port", str(port), *extra],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ChuteProcess(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 30
    # uvicorn listens only after the lifespan startup (hooks, then routes) completed.
    while not accepts(port):
        if process.poll() is not None:
            return running
        if time.monotonic() > deadline:
            running.stop()
            raise AssertionError("chutes run did not start:\n" + running.output())
        time.sleep(0.05)
    return running


@pytest.fixture
def hooks_file(tmp_path: Path) -> Path:
    return tmp_path / "hooks.txt"


@pytest.fixture
def chute_env(hooks_file: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    env["RUN_HOOKS_FILE"] = str(hooks_file)
    return env


def hooks_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---- serving -------------------------------------------------------------------------------------


def test_cords_hooks_and_shutdown_in_production_mode(
    tmp_path: Path,
    chute_env: dict[str, str],
    hooks_file: Path,
    serve_http: Callable[[Answer], HttpRecorder],
) -> None:
    upstream = serve_http(upstream_answer)
    chute_env["RUN_UPSTREAM_PORT"] = upstream.url.rsplit(":", 1)[1]
    chute = start_chute(f"{FILES}/run_echo:chute", chute_env, tmp_path)
    try:
        assert hooks_of(hooks_file) == ["startup:early", "startup:normal", "startup:late", "lifespan:start"]
        with httpx.Client(base_url=chute.url, timeout=10) as http:
            echoed = http.post("/echo", json={"text": "hi", "n": [1, 2]})
            assert echoed.status_code == 200, echoed.text
            assert echoed.json() == {"echo": {"text": "hi", "n": [1, 2]}, "greeting": "hello"}

            with http.stream("POST", "/count", json={"to": 3}) as streamed:
                assert streamed.status_code == 200
                chunks = list(streamed.iter_text())
            assert "".join(chunks) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
            assert http.post("/letters", json="abc").text == "abc"

            assert http.post("/repeat", json={"text": "ab", "times": 3}).json() == "ababab"
            assert http.post("/repeat", json={"text": "ab"}).json() == "abab"
            refused = http.post("/repeat", json={"times": "many"})
            assert (refused.status_code, refused.json()) == (400, {"detail": "Invalid input parameters"})

            # Production routes: every cord is POST at its internal path, public paths are unused.
            assert http.post("/info").json()["name"] == "run-echo"
            assert http.get("/v1/info").status_code == 404

            proxied = http.post("/proxy", json={"prompt": "x"})
            assert proxied.json() == {"method": "POST", "upstream": {"prompt": "x"}}
            assert http.post("/proxy_lines", json={}).text == "line 0\nline 1\nline 2\n"
        assert [r.path for r in upstream.requests] == ["/v1/upstream", "/v1/lines"]
    finally:
        status = chute.stop()
    assert status == 0, chute.output()
    # Shutdown hooks ran after SIGTERM, in priority order, after the app's own lifespan ended.
    assert hooks_of(hooks_file) == [
        "startup:early",
        "startup:normal",
        "startup:late",
        "lifespan:start",
        "lifespan:stop",
        "shutdown:first",
        "shutdown:second",
    ]


def test_dev_mode_serves_public_paths_and_methods(
    tmp_path: Path, chute_env: dict[str, str], hooks_file: Path
) -> None:
    chute = start_chute(f"{FILES}/run_echo:chute", chute_env, tmp_path, "--dev")
    try:
        with httpx.Client(base_url=chute.url, timeout=10) as http:
            info = http.get("/v1/info")
            assert info.status_code == 200, info.text
            assert "/info" in info.json()["cords"]
            assert http.post("/info").status_code == 404
            # Cords without a public path keep their internal one.
            assert http.post("/echo", json={"a": 1}).json()["echo"] == {"a": 1}
    finally:
        assert chute.stop() == 0, chute.output()
    assert hooks_of(hooks_file)[-2:] == ["shutdown:first", "shutdown:second"]


def test_a_failing_startup_hook_stops_the_server(
    tmp_path: Path, chute_env: dict[str, str], hooks_file: Path
) -> None:
    chute_env["RUN_FAIL_STARTUP"] = "1"
    chute = start_chute(f"{FILES}/run_echo:chute", chute_env, tmp_path)
    assert chute.process.wait(30) == 3  # uvicorn's startup-failure status
    assert "startup refused on purpose" in chute.output()
    assert hooks_of(hooks_file) == ["startup:early"]


def test_bad_references_are_one_line_errors(chute_env: dict[str, str]) -> None:
    for ref, expected in [
        ("no_such_file:chute", "no module 'no_such_file'"),
        (f"{FILES}/run_echo:nothing", "has no variable 'nothing'"),
        (f"{FILES}/run_echo:HOOKS", "is a PosixPath, not a Chute or ChutePack"),
        ("just-a-name", "is not a chute reference"),
    ]:
        result = subprocess.run([CHUTES, "run", ref], cwd=ROOT, env=chute_env, capture_output=True, text=True)
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


# ---- jobs ------------------------------------------------------------------------------------------


@dataclass
class Upload:
    path: str
    filename: str
    data: bytes


def multipart_fields(request: Recorded) -> Upload:
    """The `path` and `file` fields of a multipart PUT, parsed as a server would."""
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str) and isinstance(payload, bytes)
        fields[name] = (part.get_filename(), payload)
    return Upload(path=fields["path"][1].decode(), filename=str(fields["file"][0]), data=fields["file"][1])


def job_api_answer(request: Recorded, base: str) -> tuple[int, str, bytes]:
    if request.method == "POST" and request.path == "/jobs/job-1?token=secret":
        names = json.loads(request.body)["output_filenames"]
        urls = {name: f"{base}/jobs/job-1/upload?token=file-{i}" for i, name in enumerate(names)}
        return 200, "application/json", json.dumps({"job_id": "job-1", "output_storage_urls": urls}).encode()
    if request.method == "PUT" and request.path.startswith("/jobs/job-1/upload?"):
        return 200, "application/json", b'{"uploaded": true}'
    if request.method == "PUT" and request.path == "/jobs/job-1?token=secret":
        return 200, "application/json", b'{"status": "complete"}'
    return 404, "application/json", b'{"detail": "Not Found"}'


def run_job(env: dict[str, str], status_url: str, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHUTES,
            "run",
            f"{FILES}/run_jobs:chute",
            "--job-method",
            "train",
            "--job-id",
            "job-1",
            "--job-data",
            json.dumps(data),
            "--job-status-url",
            status_url,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_job_runs_reports_and_uploads_its_outputs(
    chute_env: dict[str, str], hooks_file: Path, serve_http: Callable[[Answer], HttpRecorder]
) -> None:
    api = serve_http(job_api_answer)
    result = run_job(chute_env, f"{api.url}/jobs/job-1?token=secret", {"epochs": 2})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["status"] == "complete" and printed["result"] == {"epochs": 2, "loss": 0.25}
    assert printed["output_filenames"] == ["logs/train.txt", "weights.bin"]
    assert hooks_of(hooks_file) == ["startup", "shutdown"]

    first, *uploads, last = api.requests
    assert (first.method, json.loads(first.body)) == (
        "POST",
        {
            "status": "complete",
            "result": {"epochs": 2, "loss": 0.25},
            "output_filenames": ["logs/train.txt", "weights.bin"],
        },
    )
    files = {upload.path: upload for upload in map(multipart_fields, uploads)}
    assert set(files) == {"logs/train.txt", "weights.bin"}
    assert (
        files["weights.bin"].data == bytes(range(256)) * 2 and files["weights.bin"].filename == "weights.bin"
    )
    assert files["logs/train.txt"].data == b"2 epochs, job job-1\n"
    assert files["logs/train.txt"].filename == "train.txt"  # the basename; `path` has the rest
    assert (last.method, last.path, json.loads(last.body)) == (
        "PUT",
        "/jobs/job-1?token=secret",
        {"status": "done"},
    )


def test_a_failing_job_reports_the_error_and_exits_1(
    chute_env: dict[str, str], serve_http: Callable[[Answer], HttpRecorder]
) -> None:
    api = serve_http(job_api_answer)
    result = run_job(chute_env, f"{api.url}/jobs/job-1?token=secret", {"fail": True})
    assert result.returncode == 1
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["status"] == "error" and printed["detail"].startswith("Job failed: diverged")
    reported = json.loads(api.requests[0].body)
    assert reported["status"] == "error" and reported["output_filenames"] == []
    assert [(r.method, r.path) for r in api.requests[1:]] == [("PUT", "/jobs/job-1?token=secret")]


def test_unknown_job_methods_and_bad_job_data(chute_env: dict[str, str]) -> None:
    unknown = subprocess.run(
        [CHUTES, "run", f"{FILES}/run_jobs:chute", "--job-method", "nope"],
        cwd=ROOT,
        env=chute_env,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1 and "has no job 'nope' (jobs: train)" in unknown.stderr
    bad = subprocess.run(
        [CHUTES, "run", f"{FILES}/run_jobs:chute", "--job-method", "train", "--job-data", "[1]"],
        cwd=ROOT,
        env=chute_env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "must be a JSON object" in bad.stderr
