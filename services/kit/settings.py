"""Configuration shared by every process of the suite: `CHUTES_*` environment variables.

The same names are used by `chutes-suite up`, the tests, containers and the Helm chart.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

#: The five services, in the order `chutes-suite up` starts them.
SERVICE_NAMES = ("identity", "registry", "jobs", "attestation", "metrics")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHUTES_", extra="ignore")

    #: PostgreSQL URL (`postgresql://user@host:port/db`). Unset: `up` starts an embedded server.
    database_url: str | None = None
    #: Where `up` keeps the embedded database and the rendered gateway config.
    data_dir: Path = Path(".data")

    #: Where each service listens and where the others (and Envoy) reach it. Where the others
    #: reach a replicated service this may be a comma-separated list of IP `host:port`s, one per
    #: replica (`up --replicas N` sets it so; services/kit/channels.py balances over them); a
    #: process always listens on one address: its own replica's.
    identity_address: str = "127.0.0.1:50151"
    registry_address: str = "127.0.0.1:50152"
    jobs_address: str = "127.0.0.1:50153"
    attestation_address: str = "127.0.0.1:50154"
    metrics_address: str = "127.0.0.1:50155"
    #: Where identity answers the gateway's signature checks (plain HTTP; internal only).
    identity_authz_address: str = "127.0.0.1:50160"
    #: Where the registry answers the gateway's checks of chute invocations (plain HTTP; internal).
    registry_authz_address: str = "127.0.0.1:50161"
    #: Where each service serves Prometheus' `GET /metrics` (plain HTTP; internal only). Unset: none
    #: (`chutes-suite up` sets each one to a free loopback port and prints where).
    identity_prometheus_address: str | None = None
    registry_prometheus_address: str | None = None
    jobs_prometheus_address: str | None = None
    attestation_prometheus_address: str | None = None
    metrics_prometheus_address: str | None = None
    #: How many processes of each service `chutes-suite up` runs (`--replicas`), behind Envoy.
    replicas: int = 1
    #: Host a service binds to; unset means the host of its own address (set 0.0.0.0 in containers).
    bind_host: str | None = None

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    #: Envoy's admin interface (readiness, stats) stays on loopback; 0 picks a free port.
    gateway_admin_port: int = 0
    #: `up` runs a miner for this machine (a node with its GPUs, or a simulated inventory of
    #: `local_miner_gpus` where there are no NVIDIA GPUs, so CPU chutes run on a laptop; the
    #: pro_6000, 96 GB, is one the SDK's default node selector and 80 GB selectors both accept).
    local_miner: bool = True
    local_miner_gpus: str = "pro_6000:2"
    #: Chutes answer at `{slug}.{chute_domain}` on the gateway's port (the real `{slug}.chutes.ai`).
    chute_domain: str = "localhost"
    #: Add the benchmark-only direct-response route (`/__bench/direct`) that measures Envoy alone.
    gateway_bench_route: bool = False
    #: The gateway streams its access log of chute calls to the metrics service (one invocation
    #: record per call). Off only to measure what that stream costs Envoy (bench/README.md): the
    #: records and the chutes' invocation counts stop.
    gateway_invocation_records: bool = True

    #: Accept any registration token (a local suite); when false, tokens must be ones an operator
    #: created (`registration_tokens`).
    open_registration: bool = True
    #: How far a hotkey signature's nonce (unix seconds) may be from the server's clock.
    signature_window_seconds: int = 600

    #: USD per TAO, for prices in TAO next to USD; unset (no price feed here): USD only.
    tao_usd_rate: float | None = None
    #: The integrated subnets (services/registry/subnets.py): a JSON list of {name, netuid,
    #: substring[, max_public_chutes (3)]} replacing the real API's seven; unset: those seven.
    integrated_subnets: str | None = None

    #: Where clients reach the gateway from outside (job status and upload URLs handed to job
    #: instances); unset: http://{gateway_host or 127.0.0.1}:{gateway_port}.
    public_url: str | None = None
    #: Jobs a day per user and chute, and in total, when no job_quotas row says otherwise (the
    #: real API's default is 0, no jobs; a new suite runs jobs at once).
    default_job_quota: int = 100
    #: HS256 secret of job tokens; unset: a random secret kept in {data_dir}/job-token-secret.
    job_token_secret: str | None = None
    #: Where job output files go: unset = {data_dir}/job-files; `s3://bucket[/prefix]` = an
    #: S3-compatible store at job_storage_endpoint (AWS when unset) with these credentials.
    job_storage_url: str | None = None
    job_storage_endpoint: str | None = None
    job_storage_access_key_id: str | None = None
    job_storage_secret_access_key: str | None = None
    job_storage_region: str = "us-east-1"
    #: A job no node has taken after this many seconds ends in error.
    job_pending_timeout_seconds: float = 3600.0

    #: The metrics service logs each chute's utilization and the scheduler's target this often (and
    #: at once when the scheduler changes something); the real autoscaler logs every ~30 minutes.
    capacity_log_seconds: float = 60.0
    #: The miner means (per instance, over the last day of invocations) are rebuilt this often.
    miner_means_seconds: float = 600.0

    #: Seconds a stopping service waits for in-flight calls before cancelling them.
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"

    def address_of(self, service: str) -> str:
        """The `host:port` where `service` is reached."""
        if service not in SERVICE_NAMES:
            raise KeyError(f"unknown service {service!r}")
        address: str = getattr(self, f"{service}_address")
        return address

    def listen_address_of(self, service: str) -> str:
        """The `host:port` a service binds (its address, with `bind_host` if set)."""
        host, _, port = self.address_of(service).rpartition(":")
        return f"{self.bind_host or host}:{port}"

    def prometheus_address_of(self, service: str) -> str | None:
        """The `host:port` where `service` serves `GET /metrics`, if it serves it."""
        if service not in SERVICE_NAMES:
            raise KeyError(f"unknown service {service!r}")
        address: str | None = getattr(self, f"{service}_prometheus_address")
        return address


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
