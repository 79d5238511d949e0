"""The API session every `chutes` command uses: signed or keyed requests, and API failures as
`CommandError`s that `main` prints as one line."""

from __future__ import annotations

import importlib.metadata
import json
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from chutes.config import Config
from chutes.util.auth import auth_headers


def _version() -> str:
    try:
        return importlib.metadata.version("chutes-suite")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION = _version()


class CommandError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


class ApiError(CommandError):
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        super().__init__(f"{response.status_code}: {detail_of(response)}")


def detail_of(response: httpx.Response) -> str:
    """The API's error text: `detail` of the JSON error body (422 lists flattened), else the body."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        parts = []
        for problem in detail:
            if isinstance(problem, dict):
                location = ".".join(str(part) for part in problem.get("loc", []))
                parts.append(f"{location}: {problem.get('msg', problem)}")
            else:
                parts.append(str(problem))
        return "; ".join(parts)
    return detail if isinstance(detail, str) else json.dumps(detail)


def compact(body: Any) -> bytes:
    """JSON bytes as the published CLI's orjson writes them: no spaces, UTF-8, key order kept."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def path_part(value: str) -> str:
    # Names and image refs go into paths verbatim (`/images/alice/base:1.0`, chute names with
    # `/`), as the real client sends them; only characters that would break the URL are escaped.
    return quote(value, safe="/:@")


class Api:
    """One command's API session: authentication per request, errors as `ApiError`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.client = httpx.Client(
            base_url=config.api_base_url,
            timeout=httpx.Timeout(60.0),
            headers={"User-Agent": f"chutes-suite/{VERSION}"},
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        try:
            return self.client.send(request, stream=stream)
        except httpx.TransportError as error:
            raise CommandError(f"cannot reach {self.config.api_base_url}: {error}") from None

    def get(self, path: str, purpose: str, timeout: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        headers = auth_headers(self.config, purpose=purpose)
        return self._send(self.client.build_request("GET", path, headers=headers, timeout=timeout))

    def delete(self, path: str, purpose: str) -> httpx.Response:
        # Content-Length: 0 as the real client sends it; the signature is over the purpose.
        headers = {**auth_headers(self.config, purpose=purpose), "Content-Length": "0"}
        return self._send(self.client.build_request("DELETE", path, headers=headers))

    def post(
        self,
        path: str,
        body: Any,
        extra_headers: dict[str, str] | None = None,
        timeout: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        payload = compact(body)  # signed and sent byte for byte
        headers = {**auth_headers(self.config, payload=payload), **(extra_headers or {})}
        request = self.client.build_request("POST", path, content=payload, headers=headers, timeout=timeout)
        return self._send(request)

    def post_file(self, path: str, field: str, file: Path) -> httpx.Response:
        """POST one file as multipart form data, signed over the raw multipart bytes (the
        published CLI's `POST /logos/`)."""
        mime = mimetypes.guess_type(file.name)[0] or "image/png"
        form = httpx.Request("POST", "/", files={field: (file.name, file.read_bytes(), mime)})
        payload = form.read()
        headers = {
            **auth_headers(self.config, payload=payload),
            "Content-Type": form.headers["Content-Type"],
        }
        return self._send(self.client.build_request("POST", path, content=payload, headers=headers))

    def stream_get(self, path: str, purpose: str, timeout: Any) -> httpx.Response:
        headers = auth_headers(self.config, purpose=purpose)
        request = self.client.build_request("GET", path, headers=headers, timeout=timeout)
        return self._send(request, stream=True)


def ok_json(response: httpx.Response) -> Any:
    if not response.is_success:
        raise ApiError(response)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CommandError(
            f"the API answered {response.status_code} without JSON: {response.text[:200]}"
        ) from None
