"""Job file transfers through the gateway (issue 10): a 1 GiB output file uploaded as a job's
instance uploads it, and downloaded as its owner downloads it.

`prepare` (once per harness run, before the first transfer scenario): the harness's user gets an
image (unless the invocation scenarios made one) and deploys a job chute (tests/test_jobs.py's
`train` job, no cords). No miner runs the jobs: the harness plays the instance with tokens it
mints from the suite's CHUTES_JOB_TOKEN_SECRET (suite.Suite sets it), as tests/test_jobs.py does.
The chute asks for 8 GPUs, more than the local miner's simulated inventory has, so that when the
invocation scenarios run the miner in the same harness run, it never takes these jobs.

Each upload run: create a job (POST /jobs/{chute_id}/train, API key), report it finished with one
output file (POST /jobs/{job_id}?token=<job token>; the answer holds the upload URL and its
per-file token), then PUT the multipart body (`path`, then `file`) to that URL through the
gateway, timed from sending the request line to having read the answer. The body is generated as
it is sent: 1 MiB chunks, each an 8-byte index followed by one of BLOCKS random blocks (the client
holds BLOCKS MiB, never the file), written with http.client on a plain connection with a
Content-Length. After the timing the stored file is read back from the suite's data directory and
its size and CRC-32 checked; then the job is completed (PUT /jobs/{job_id} {"status": "done"}).
The last upload's job stays for the downloads; the others are deleted (their files with them).

Each download run: GET /jobs/{job_id}/download/{file_id} with the owner's API key through the
gateway, read with readinto into one 1 MiB buffer (the response is chunked), size and CRC-32
computed as the bytes arrive, timed from the request to the last byte.

While a transfer runs, every process of the suite is sampled every SAMPLE_SECONDS (RSS from
/proc/<pid>/statm): the growth is the peak minus the sample taken right before the transfer.
CPU (user + system, /proc/<pid>/stat) is read before and after, per GB moved (10^9 bytes); the
per-run lines also show the system part and the minor page faults of the busy processes (where
the time of the upload goes, bench/README.md).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import invocation
from .processes import CLOCK_TICKS, children_of, faults_and_system_ticks

if TYPE_CHECKING:
    from .scenarios import Scenario
    from .suite import Suite

GIB = 1 << 30
MIB = 1 << 20
#: The file each run moves, and the chunk the client writes and reads.
TRANSFER_BYTES = GIB
CHUNK_BYTES = MIB
#: Distinct random blocks the generated body cycles through (the client's whole payload memory).
BLOCKS = 16
#: The unrecorded warm-up before the measured runs (first calls pay for lazy set-up).
WARM_UP_BYTES = 16 * MIB
SAMPLE_SECONDS = 0.1
#: Issue 10's targets.
TARGET_MB_S = 200.0
RSS_LIMIT_MIB = 64.0
FILENAME = "model.bin"
JOB = {"name": "train", "upload": True, "ports": [], "timeout": 60}
#: More GPUs than suite.LOCAL_MINER_GPUS offers: a miner in the same run never takes the jobs.
UNPLACEABLE_GPUS = 8
TIMEOUT_SECONDS = 300.0
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class JobChute:
    chute_id: str


@dataclass
class StoredFile:
    """An uploaded, completed output file the downloads read."""

    job_id: str
    file_id: str
    size: int
    crc32: int


@dataclass
class TransferRun:
    seconds: float
    bytes: int
    #: Process name -> CPU seconds per GB (10^9 bytes) moved; "client" is the harness's transfer thread.
    cpu_s_per_gb: dict[str, float]
    #: Process name -> peak RSS minus the RSS right before the transfer (bytes; for "postgres" the
    #: largest growth of any of its processes).
    rss_growth: dict[str, int]
    #: Process name -> RSS right before the transfer (bytes).
    rss_before: dict[str, int]
    #: Process name -> peak RSS during the transfer (bytes).
    rss_peak: dict[str, int]
    samples: int
    #: Process name -> system CPU seconds per GB, and minor page faults per GB (suite.pids only).
    sys_s_per_gb: dict[str, float] = field(default_factory=dict)
    faults_per_gb: dict[str, float] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.bytes / self.seconds / 1e6


@dataclass
class TransferResult:
    scenario: Scenario
    runs: list[TransferRun] = field(default_factory=list)

    @property
    def mb_s(self) -> float:
        return statistics.median(run.mb_s for run in self.runs)

    def max_growth(self, excluded: tuple[str, ...] = ("postgres",)) -> tuple[str, int]:
        """The process that grew most in any run (PostgreSQL aside, as the target says) and by how much."""
        growths = [(g, n) for run in self.runs for n, g in run.rss_growth.items() if n not in excluded]
        growth, name = max(growths)
        return name, growth

    def ratchet(self) -> dict[str, int]:
        """Peak RSS in any run minus the RSS before the first run: what stays from run to run."""
        first = self.runs[0].rss_before
        return {name: max(run.rss_peak.get(name, 0) for run in self.runs) - first[name] for name in first}


# ---- the payload ---------------------------------------------------------------------------------


class Payload:
    """TRANSFER_BYTES of generated data, produced chunk by chunk into one reused buffer."""

    def __init__(self, size: int = TRANSFER_BYTES) -> None:
        if size % CHUNK_BYTES:
            raise ValueError("the payload is whole chunks")
        self.size = size
        self.blocks = [os.urandom(CHUNK_BYTES) for _ in range(BLOCKS)]
        self._crc32: int | None = None

    def chunks(self) -> Iterator[bytearray]:
        """The chunks in order. Each is the same buffer, refilled: send it before asking for the next."""
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        for index in range(self.size // CHUNK_BYTES):
            view[8:] = memoryview(self.blocks[index % BLOCKS])[8:]
            view[:8] = index.to_bytes(8, "big")
            yield buffer

    @property
    def crc32(self) -> int:
        """CRC-32 of the whole payload (computed once, before anything is timed)."""
        if self._crc32 is None:
            crc = 0
            for chunk in self.chunks():
                crc = zlib.crc32(chunk, crc)
            self._crc32 = crc
        return self._crc32


def multipart(boundary: str) -> tuple[bytes, bytes]:
    """The framing around the file's bytes: the `path` field first, as the SDK (httpx) sends it."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n{FILENAME}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{FILENAME}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


# ---- the job routes ------------------------------------------------------------------------------


def _token(suite: Suite, job_id: str, filename: str | None = None) -> str:
    import jwt

    claims: dict[str, Any] = {"sub": job_id, "iat": int(time.time()), "iss": "chutes"}
    if filename is not None:
        claims["filename"] = filename
    return jwt.encode(claims, suite.job_token_secret, algorithm="HS256")


def _call(suite: Suite, method: str, path: str, body: Any = None, owner: bool = True) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", suite.gateway_port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if owner:
        headers["Authorization"] = suite.credentials().api_key
    try:
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        reply = connection.getresponse()
        data = reply.read()
    finally:
        connection.close()
    if reply.status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {reply.status}: {data[:500]!r}")
    return json.loads(data)


def prepare(suite: Suite) -> JobChute:
    """The job chute the transfers' jobs belong to (module doc)."""
    if suite.image is None:
        suite.image = invocation.add_image(suite)
    body = invocation.deploy_body(f"bench-jobs-{os.urandom(3).hex()}", suite.image, 1)
    body.update(cords=[], jobs=[JOB])
    body["node_selector"]["gpu_count"] = UNPLACEABLE_GPUS
    chute = invocation._rest(suite, "POST", "/chutes/?accept_fee=true", body)
    print(f"job chute {chute['slug']} ({chute['chute_id']}) deployed", flush=True)
    return JobChute(str(chute["chute_id"]))


def new_upload(suite: Suite) -> tuple[str, str]:
    """A fresh job reported finished with one output file: (job_id, upload path with its token)."""
    assert suite.job_chute is not None
    job_id = str(_call(suite, "POST", f"/jobs/{suite.job_chute.chute_id}/train", {})["job_id"])
    outcome = {"status": "complete", "result": {"bench": True}, "output_filenames": [FILENAME]}
    finished = _call(suite, "POST", f"/jobs/{job_id}?token={_token(suite, job_id)}", outcome, owner=False)
    url = urllib.parse.urlsplit(finished["output_storage_urls"][FILENAME])
    return job_id, f"{url.path}?{url.query}"


def complete(suite: Suite, job_id: str) -> None:
    path = f"/jobs/{job_id}?token={_token(suite, job_id)}"
    done = _call(suite, "PUT", path, {"status": "done"}, owner=False)
    if done["status"] != "complete":
        raise RuntimeError(f"job {job_id} completed as {done['status']!r}: {done.get('error_detail')}")


def delete(suite: Suite, job_id: str) -> None:
    _call(suite, "DELETE", f"/jobs/{job_id}")


def upload(suite: Suite, path: str, payload: Payload) -> dict[str, Any]:
    """PUT the multipart body through the gateway, generated as it is sent; the answer's JSON."""
    boundary = f"chutesbench{uuid.uuid4().hex}"
    head, tail = multipart(boundary)
    connection = http.client.HTTPConnection("127.0.0.1", suite.gateway_port, timeout=TIMEOUT_SECONDS)
    try:
        connection.putrequest("PUT", path, skip_accept_encoding=True)
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(len(head) + payload.size + len(tail)))
        connection.endheaders()
        connection.send(head)
        for chunk in payload.chunks():
            connection.send(chunk)
        connection.send(tail)
        reply = connection.getresponse()
        data = reply.read()
    finally:
        connection.close()
    if reply.status != 200:
        raise RuntimeError(f"upload: HTTP {reply.status}: {data[:500]!r}")
    answer: dict[str, Any] = json.loads(data)
    return answer


def download(suite: Suite, stored: StoredFile) -> tuple[int, int]:
    """GET the file through the gateway as its owner; (size, CRC-32) computed as it streams."""
    connection = http.client.HTTPConnection("127.0.0.1", suite.gateway_port, timeout=TIMEOUT_SECONDS)
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    size = crc = 0
    try:
        connection.request(
            "GET", f"/jobs/{stored.job_id}/download/{stored.file_id}",
            headers={"Authorization": suite.credentials().api_key},
        )  # fmt: skip
        reply = connection.getresponse()
        if reply.status != 200:
            raise RuntimeError(f"download: HTTP {reply.status}: {reply.read()[:500]!r}")
        while count := reply.readinto(view):
            crc = zlib.crc32(view[:count], crc)
            size += count
    finally:
        connection.close()
    return size, crc


def stored_crc32(suite: Suite, key: str) -> tuple[int, int]:
    """Size and CRC-32 of a stored output file, read from the suite's storage directory."""
    path: Path = suite.workdir / "data" / "job-files" / key
    size = crc = 0
    with path.open("rb") as stored:
        while chunk := stored.read(8 * MIB):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


# ---- what the suite's processes do meanwhile ---------------------------------------------------


def _rss(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def _descendants(root: int) -> list[int]:
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children_of(pid))
    return found


class RssSampler:
    """Samples the RSS of every process of the suite every SAMPLE_SECONDS on a thread of its own."""

    def __init__(self, suite: Suite) -> None:
        #: name -> pids: one each, PostgreSQL's whole tree (postmaster, backends, helpers).
        self.pids: dict[str, list[int]] = {name: [pid] for name, (pid, _) in suite.pids.items()}
        if suite.process is not None:
            self.pids["up"] = [suite.process.pid]
        if suite.chute is not None:
            self.pids["instance"] = [suite.chute.pid]
        if suite.postgres_pid is not None:
            self.pids["postgres"] = _descendants(suite.postgres_pid)
        self.before: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> dict[int, int]:
        found = {pid: _rss(pid) for pids in self.pids.values() for pid in pids}
        return {pid: rss for pid, rss in found.items() if rss is not None}

    def _record(self) -> None:
        for pid, rss in self._sample().items():
            self.peak[pid] = max(self.peak.get(pid, 0), rss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._record()

    def start(self) -> None:
        self.before = self._sample()
        self.peak = dict(self.before)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._record()

    def by_name(self, values: dict[int, int]) -> dict[str, int]:
        """Per process name; PostgreSQL: its largest process."""
        return {
            name: max((values.get(pid, 0) for pid in pids), default=0) for name, pids in self.pids.items()
        }

    def growth(self) -> dict[str, int]:
        return {
            name: max((self.peak.get(pid, 0) - self.before.get(pid, 0) for pid in pids if pid in self.before),
                      default=0)
            for name, pids in self.pids.items()
        }  # fmt: skip


def _faults_and_sys(suite: Suite) -> dict[str, tuple[int, int]]:
    """Minor page faults and system CPU ticks of Envoy, each service and the miner."""
    found = {name: faults_and_system_ticks(pid) for name, (pid, _) in suite.pids.items()}
    return {name: value for name, value in found.items() if value is not None}


def measured(suite: Suite, moved: int, transfer: Any) -> tuple[TransferRun, Any]:
    """Run `transfer()` (which moves `moved` bytes) with RSS sampled and CPU counted around it."""
    sampler = RssSampler(suite)
    sampler.start()
    before, client_before, kernel_before = suite.snapshot(), time.thread_time(), _faults_and_sys(suite)
    started = time.perf_counter()
    try:
        answer = transfer()
    finally:
        seconds = time.perf_counter() - started
        after, client_after, kernel_after = suite.snapshot(), time.thread_time(), _faults_and_sys(suite)
        sampler.stop()
    per_gb = 1e9 / moved
    cpu = {name: (after[name] - before[name]) / CLOCK_TICKS * per_gb for name in before}
    cpu["client"] = (client_after - client_before) * per_gb
    kernel = {n: (kernel_after[n][0] - b[0], kernel_after[n][1] - b[1])
              for n, b in kernel_before.items() if n in kernel_after}  # fmt: skip
    run = TransferRun(
        seconds, moved, cpu, sampler.growth(), sampler.by_name(sampler.before),
        sampler.by_name(sampler.peak), sampler.samples,
        sys_s_per_gb={n: ticks / CLOCK_TICKS * per_gb for n, (_, ticks) in kernel.items()},
        faults_per_gb={n: faults * per_gb for n, (faults, _) in kernel.items()},
    )  # fmt: skip
    return run, answer


# ---- the scenarios -------------------------------------------------------------------------------


def _upload_run(suite: Suite, payload: Payload, keep: bool, timed: bool) -> TransferRun | None:
    job_id, path = new_upload(suite)
    run: TransferRun | None = None
    if timed:
        run, answer = measured(suite, payload.size, lambda: upload(suite, path, payload))
    else:
        answer = upload(suite, path, payload)
    size, crc = stored_crc32(suite, answer["path"])
    if (size, crc) != (payload.size, payload.crc32):
        raise RuntimeError(
            f"stored {size} bytes (CRC-32 {crc:08x}), sent {payload.size} ({payload.crc32:08x})"
        )
    complete(suite, job_id)
    if keep:
        if suite.job_file is not None:
            delete(suite, suite.job_file.job_id)
        suite.job_file = StoredFile(job_id, str(answer["file_id"]), size, crc)
    else:
        delete(suite, job_id)
    return run


def _download_run(suite: Suite, timed: bool) -> TransferRun | None:
    stored = suite.job_file
    assert stored is not None
    run: TransferRun | None = None
    if timed:
        run, (size, crc) = measured(suite, stored.size, lambda: download(suite, stored))
    else:
        size, crc = download(suite, stored)
    if (size, crc) != (stored.size, stored.crc32):
        raise RuntimeError(
            f"downloaded {size} bytes (CRC-32 {crc:08x}), stored {stored.size} ({stored.crc32:08x})"
        )
    return run


def bench(suite: Suite, scenario: Scenario, repeat: int) -> TransferResult:
    print(f"{scenario.name}: {scenario.what}", flush=True)
    if suite.payload is None:
        suite.payload = Payload()
        print(f"  payload: {suite.payload.size:,} bytes, CRC-32 {suite.payload.crc32:08x}", flush=True)
    payload = suite.payload
    result = TransferResult(scenario)
    if scenario.client == "upload":
        _upload_run(suite, Payload(WARM_UP_BYTES), keep=False, timed=False)
        for index in range(1, repeat + 1):
            run = _upload_run(suite, payload, keep=index == repeat, timed=True)
            assert run is not None
            result.runs.append(run)
            print(describe(run, index, repeat), flush=True)
    else:
        if suite.job_file is None or suite.job_file.size != payload.size:
            print("  uploading the file first (not measured)", flush=True)
            _upload_run(suite, payload, keep=True, timed=False)
        _download_run(suite, timed=False)  # warm-up: the same file, not measured
        for index in range(1, repeat + 1):
            run = _download_run(suite, timed=True)
            assert run is not None
            result.runs.append(run)
            print(describe(run, index, repeat), flush=True)
    name, growth = result.max_growth()
    print(
        f"  median {result.mb_s:,.0f} MB/s (target {TARGET_MB_S:.0f}); largest RSS growth {name} "
        f"{growth / MIB:.1f} MiB (limit {RSS_LIMIT_MIB:.0f}); peak over the first baseline: "
        + " ".join(f"{n} {g / MIB:+.1f}" for n, g in sorted(result.ratchet().items())),
        flush=True,
    )
    return result


# ---- report ----------------------------------------------------------------------------------------

HEADER = (
    "| scenario | MB/s median | MB/s runs | ≥ 200 MB/s | largest RSS growth (MiB)"
    " | RSS growth per process (MiB, max over runs) | CPU s/GB per process (median)"
    " | whole stack CPU s/GB | verified | date | command |",
    "|---|---:|---|---|---|---|---|---:|---|---|---|",
)
#: Processes listed in the per-process cells even when they are idle.
ALWAYS = ("envoy", "jobs", "client")


def describe(run: TransferRun, index: int, repeat: int) -> str:
    def cpu_of(name: str, seconds: float) -> str:
        if name not in run.sys_s_per_gb or seconds < 0.1:
            return f"{name} {seconds:.2f}"
        faults = run.faults_per_gb[name]
        return f"{name} {seconds:.2f} (sys {run.sys_s_per_gb[name]:.2f}, {faults / 1000:,.0f}k faults)"

    cpu = " ".join(cpu_of(n, v) for n, v in sorted(run.cpu_s_per_gb.items()) if v >= 0.005)
    rss = " ".join(f"{n} {g / MIB:+.1f}" for n, g in sorted(run.rss_growth.items()))
    return (
        f"  run {index}/{repeat}: {run.mb_s:,.0f} MB/s ({run.bytes:,} bytes in {run.seconds:.2f} s) | "
        f"CPU s/GB: {cpu} | RSS growth MiB ({run.samples} samples): {rss}"
    )


def table_row(result: TransferResult, command: str, date: str) -> str:
    runs = result.runs
    names = sorted({n for run in runs for n in run.cpu_s_per_gb})
    cpu = {n: statistics.median(run.cpu_s_per_gb.get(n, 0.0) for run in runs) for n in names}
    growth = {n: max(run.rss_growth.get(n, 0) for run in runs) for n in sorted(runs[0].rss_growth)}
    whole = statistics.median(sum(v for n, v in run.cpu_s_per_gb.items() if n != "client") for run in runs)
    name, largest = result.max_growth()
    verdict = "yes" if result.mb_s >= TARGET_MB_S else "**no**"
    within = "within" if largest / MIB <= RSS_LIMIT_MIB else "**over**"
    ratchet = {n: g for n, g in result.ratchet().items() if n != "postgres"}
    kept = max(ratchet, key=lambda n: (ratchet[n], n in ALWAYS))
    cells = [
        result.scenario.name,
        f"{result.mb_s:,.0f}",
        ", ".join(f"{run.mb_s:,.0f}" for run in runs),
        verdict,
        f"{largest / MIB:.1f} ({name}; {within} 64); all runs over the first's baseline: "
        f"{kept} {ratchet[kept] / MIB:.1f}",
        ", ".join(f"{n} {g / MIB:.1f}" for n, g in growth.items() if n in ALWAYS or abs(g) >= MIB),
        ", ".join(f"{n} {v:.2f}" for n, v in cpu.items() if n in ALWAYS or v >= 0.005),
        f"{whole:.2f}",
        "size + CRC-32",
        date,
        f"`{command}`",
    ]
    return "| " + " | ".join(cells) + " |"
