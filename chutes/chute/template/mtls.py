"""mTLS between a template chute and its engine, and the engine watchdog (published helpers).

An image that sets LLM_ENGINE_MTLS_ENABLE=1 (and runs under the platform's aegis preload) has its
engine listen with TLS and require a client certificate from an ephemeral CA, so only the chute's
passthrough (holding the client key) reaches it. These are the helper functions the published
SDK exposes in `chutes.chute.template.helpers` for that, which chute files call directly; our
templates do not turn mTLS on themselves (no aegis here).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import datetime
import ipaddress
import logging
import os
import ssl
import stat
import tempfile
import time
import uuid
from collections.abc import MutableMapping
from typing import Any, Final, Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

_AEGIS: Final = "chutes-aegis.so"
_VALIDITY: Final = datetime.timedelta(days=365)

# The files generate_mtls_certs writes, keyed as in its result (`<key>_file` / `<key>_pem`).
_PEM_FILES: Final = {
    "ca_cert": "ca.pem",
    "server_cert": "server.pem",
    "server_key": "server-key.pem",
    "client_cert": "client.pem",
    "client_key": "client-key.pem",
    "wrong_ca_cert": "wrong-ca.pem",
    "wrong_client_cert": "wrong-client.pem",
    "wrong_client_key": "wrong-client-key.pem",
}


class _Process(Protocol):
    returncode: int | None

    def poll(self) -> int | None: ...


def force_exit(exit_code: int = 1) -> None:
    """End the process now, skipping cleanup handlers (the published SDK uses a raw exit_group
    syscall so that no preloaded hook can intercept it; os._exit is the portable equivalent)."""
    os._exit(exit_code)


def set_encrypted_env_var(env: MutableMapping[str, str], name: str, value: str) -> None:
    """Put `value` in `env` and os.environ as CENC_<name>, encrypted by the aegis preload's
    `encrypt_string`, and drop the plain `name`. Raises where the preload is absent: the secret
    must not fall back to plain text."""
    try:
        encrypt = ctypes.CDLL(None).encrypt_string
    except (OSError, AttributeError):
        logger.error("encrypt_string is unavailable for %s (is %s preloaded?)", name, _AEGIS)
        raise
    encrypt.argtypes = [ctypes.c_char_p]
    encrypt.restype = ctypes.c_char_p
    encrypted = encrypt(value.encode())
    if not encrypted:
        raise RuntimeError(f"encrypt_string returned NULL for {name}")
    text = encrypted.decode()
    for mapping in (os.environ, env):
        mapping[f"CENC_{name}"] = text
        mapping.pop(name, None)


def mtls_enabled() -> bool:
    """LLM_ENGINE_MTLS_ENABLE=1 and the aegis preload present (its encrypt_string protects the
    key passphrase); otherwise engines run on plain HTTP."""
    if os.getenv("LLM_ENGINE_MTLS_ENABLE", "0") != "1":
        return False
    if _AEGIS not in os.getenv("LD_PRELOAD", ""):
        logger.warning("LLM_ENGINE_MTLS_ENABLE=1 but %s is not in LD_PRELOAD: mTLS disabled", _AEGIS)
        return False
    return True


def ipaddress_from_string(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(addr)


def _issue(
    common_name: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
    ip: str | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A P-256 certificate: a self-signed CA when `issuer` is None, else one signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer_name, issuer_key = issuer if issuer else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress_from_string(ip))]), critical=False
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def generate_mtls_certs() -> dict[str, Any]:
    """An ephemeral CA with a server (127.0.0.1) and a client certificate, plus a second CA and
    client that must be refused. Keys are encrypted with a random `password`; the PEM files are
    written read-only to a fresh directory in /dev/shm (else the temp dir), removed at exit.
    Returns `password`, `cert_dir`, and `<name>_pem` bytes and `<name>_file` paths for ca_cert,
    server_cert/key, client_cert/key, wrong_ca_cert, wrong_client_cert/key."""
    password = str(uuid.uuid4())
    encryption = serialization.BestAvailableEncryption(password.encode())
    ca_cert, ca_key = _issue("chutes-ephemeral-ca", None)
    ca = (ca_cert.subject, ca_key)
    server_cert, server_key = _issue("127.0.0.1", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1")
    client_cert, client_key = _issue("chutes-client", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    wrong_ca_cert, wrong_ca_key = _issue("wrong-ca", None)
    wrong_client_cert, wrong_client_key = _issue(
        "wrong-client", (wrong_ca_cert.subject, wrong_ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption
        )

    pems = {
        "ca_cert": ca_cert.public_bytes(serialization.Encoding.PEM),
        "server_cert": server_cert.public_bytes(serialization.Encoding.PEM),
        "server_key": key_pem(server_key),
        "client_cert": client_cert.public_bytes(serialization.Encoding.PEM),
        "client_key": key_pem(client_key),
        "wrong_ca_cert": wrong_ca_cert.public_bytes(serialization.Encoding.PEM),
        "wrong_client_cert": wrong_client_cert.public_bytes(serialization.Encoding.PEM),
        "wrong_client_key": key_pem(wrong_client_key),
    }
    # /dev/shm keeps the keys off disk.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    cert_dir = tempfile.mkdtemp(prefix="chutes_mtls_", dir=base)
    result: dict[str, Any] = {"password": password, "cert_dir": cert_dir}
    files: list[str] = []
    for name, data in pems.items():
        path = os.path.join(cert_dir, _PEM_FILES[name])
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        try:
            os.write(descriptor, data)
        finally:
            os.close(descriptor)
        files.append(path)
        result[f"{name}_pem"] = data
        result[f"{name}_file"] = path

    def cleanup() -> None:
        for path in files:
            with contextlib.suppress(OSError):
                os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(cert_dir)

    atexit.register(cleanup)
    return result


def build_client_ssl_context(
    ca_cert_file: str, client_cert_file: str, client_key_file: str, key_password: str
) -> ssl.SSLContext:
    """A client context trusting only `ca_cert_file` and presenting the client certificate (the
    engine is reached by IP, so the host name is not checked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca_cert_file)
    context.load_cert_chain(client_cert_file, client_key_file, password=key_password)
    return context


def build_wrong_client_ssl_context(
    ca_cert_file: str, wrong_client_cert_file: str, wrong_client_key_file: str, key_password: str
) -> ssl.SSLContext:
    """The same with the wrong CA's client certificate: the engine must refuse it."""
    return build_client_ssl_context(ca_cert_file, wrong_client_cert_file, wrong_client_key_file, key_password)


async def _models_status(
    url: str,
    *,
    verify: ssl.SSLContext | bool,
    api_key: str | None,
    timeout: float,  # noqa: ASYNC109
) -> int:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(verify=verify, timeout=timeout) as client:
        response = await client.get(f"{url}/v1/models", headers=headers)
        return response.status_code


async def _refused(url: str, *, verify: ssl.SSLContext | bool, api_key: str, timeout: float) -> bool:  # noqa: ASYNC109
    """True when the request fails at the connection or TLS level (what plain HTTP and a wrong
    client certificate must get)."""
    try:
        await _models_status(url, verify=verify, api_key=api_key, timeout=timeout)
    except (httpx.HTTPError, ssl.SSLError, OSError):
        return True
    return False


async def _check_mtls(
    api_key: str,
    ssl_context: ssl.SSLContext,
    wrong_ssl_context: ssl.SSLContext,
    port: int,
    *,
    with_key: bool,
) -> None:
    """RuntimeError naming the first invariant the engine breaks."""
    tls, plain = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    if with_key:
        status = await _models_status(tls, verify=ssl_context, api_key=api_key, timeout=10)
        if status != 200:
            raise RuntimeError(f"mTLS check: valid certificate and key got {status}, expected 200")
    status = await _models_status(tls, verify=ssl_context, api_key=None, timeout=10)
    if status != 401:
        raise RuntimeError(f"mTLS check: no API key got {status}, expected 401")
    if with_key:
        status = await _models_status(tls, verify=ssl_context, api_key=str(uuid.uuid4()), timeout=10)
        if status != 401:
            raise RuntimeError(f"mTLS check: a wrong API key got {status}, expected 401")
    if not await _refused(plain, verify=False, api_key=api_key, timeout=5):
        raise RuntimeError("mTLS check: plain HTTP was answered")
    if not await _refused(tls, verify=wrong_ssl_context, api_key=api_key, timeout=5):
        raise RuntimeError("mTLS check: a client certificate of another CA was accepted")


async def validate_mtls(
    model_name: str,
    api_key: str,
    ssl_context: ssl.SSLContext,
    wrong_ssl_context: ssl.SSLContext,
    port: int = 10101,
) -> None:
    """The five startup checks: certificate + key answers 200; no key or a wrong key 401; plain
    HTTP and a wrong client certificate are refused. Raises on the first that fails."""
    await _check_mtls(api_key, ssl_context, wrong_ssl_context, port, with_key=True)
    logger.info("mTLS checks passed for %s", model_name)


async def monitor_engine(
    process: _Process,
    api_key: str,
    ready_event: asyncio.Event,
    port: int = 10101,
    check_interval: int = 10,
    timeout: float = 30.0,  # noqa: ASYNC109  # the published signature: a per-request limit
    failure_threshold: int = 5,
    model_name: str = "Engine",
    ssl_context: ssl.SSLContext | None = None,
    wrong_ssl_context: ssl.SSLContext | None = None,
    mtls_check_interval: int = 30,
    mtls_failure_threshold: int = 3,
) -> None:
    """Watch an engine subprocess (a `subprocess.Popen`) forever: RuntimeError when it exits, when
    `GET /v1/models` fails `failure_threshold` times in a row once `ready_event` is set, or when
    the periodic mTLS re-check fails `mtls_failure_threshold` times in a row. Run it as a task
    whose failure ends the instance."""
    scheme = "https" if ssl_context else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    failures = mtls_failures = 0
    # The first mTLS re-check waits a full interval after the engine came up.
    last_mtls_check = time.monotonic()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{model_name} subprocess died with exit code {process.returncode}")
        if ready_event.is_set():
            try:
                status = await _models_status(
                    url, verify=ssl_context or True, api_key=api_key, timeout=timeout
                )
                failures = 0 if status == 200 else failures + 1
            except Exception:
                failures += 1
            if failures >= failure_threshold:
                raise RuntimeError(
                    f"{model_name} server is unresponsive "
                    f"(consecutive_failures={failures}, threshold={failure_threshold})"
                )
            if (
                ssl_context
                and wrong_ssl_context
                and time.monotonic() - last_mtls_check >= mtls_check_interval
            ):
                last_mtls_check = time.monotonic()
                try:
                    await _check_mtls(api_key, ssl_context, wrong_ssl_context, port, with_key=False)
                    mtls_failures = 0
                except Exception as error:
                    mtls_failures += 1
                    logger.warning(
                        "mTLS re-check of %s failed (%d in a row): %s", model_name, mtls_failures, error
                    )
                    if mtls_failures >= mtls_failure_threshold:
                        raise RuntimeError(
                            f"mTLS re-checks of {model_name} keep failing: {error!r}"
                        ) from error
        await asyncio.sleep(check_interval)


__all__ = [
    "build_client_ssl_context",
    "build_wrong_client_ssl_context",
    "force_exit",
    "generate_mtls_certs",
    "ipaddress_from_string",
    "monitor_engine",
    "mtls_enabled",
    "set_encrypted_env_var",
    "validate_mtls",
]
