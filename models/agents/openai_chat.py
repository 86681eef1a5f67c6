"""LLM agent over the OpenAI-compatible chat API (vLLM, Ollama, llama.cpp server, hosted APIs).

Standard library only (urllib + a thread pool): one POST per pair and path, at most
``max_concurrency`` in flight, retried with exponential backoff and jitter on 429, 5xx,
timeouts and connection errors. A pair whose calls keep failing gets a failed path, never a label.

The server is untrusted too: at most ``max_response_bytes`` of a reply are read, redirects are
never followed (so the key never reaches another host), and error text is stored with the key
and anything key-like masked.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from .base import PARSE_ERROR, REJECTED_ERROR, TRANSIENT_ERROR, PairToJudge, ReasoningPath, mask_secrets, stable_hash
from .prompt import PROMPT_TEXT_HASH, PROMPT_VERSION, build_messages, parse_judgement

RETRYABLE_STATUS = {408, 425, 429}  # plus every 5xx
MAX_RESPONSE_BYTES = 256 * 1024  # a 400-token answer is a few KB; more is no answer
ERROR_DETAIL_CHARS = 200


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, never followed: urllib would resend the Authorization header to the new
    location, whatever its host (and turn the POST into a GET)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx


_OPENER = urllib.request.build_opener(_NoRedirects)


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _FatalError(Exception):
    pass


class _OversizedReply(Exception):
    """The server answered with more than we read: the model's answer, not in the asked form."""


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number (fractions accepted) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIChatAgent:
    backend = "openai-chat"

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.7,
        max_concurrency: int = 4,
        timeout_s: float = 30,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_tokens: int = 400,
        *,
        seed_offset: int = 0,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        extra_body: dict | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.seed_offset = seed_offset
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.extra_body = dict(extra_body or {})  # e.g. {"top_p": 0.9} or vendor options
        self.max_response_bytes = max_response_bytes
        self.prompt_version = PROMPT_VERSION
        # Shared by every judge() call, so the limit holds even when callers use threads.
        self._slots = threading.BoundedSemaphore(max_concurrency)

    def config_key(self) -> str:
        # Timeouts, retries and concurrency change how we ask, not what the model answers.
        return stable_hash({
            "backend": self.backend, "base_url": self.base_url, "model": self.model,
            "prompt_version": self.prompt_version, "prompt_text": PROMPT_TEXT_HASH,
            "temperature": self.temperature, "max_tokens": self.max_tokens,
            "seed_offset": self.seed_offset, "extra_body": self.extra_body,
        })

    def seed_for(self, path_index: int) -> int:
        return self.seed_offset + path_index

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        if not pairs:
            return []
        workers = min(self.max_concurrency, len(pairs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"agent-{self.name}") as pool:
            return list(pool.map(lambda pair: self._judge_one(pair, path_index), pairs))

    # --- one pair ---------------------------------------------------------------------------------

    def _judge_one(self, pair: PairToJudge, path_index: int) -> ReasoningPath:
        body = {
            **self.extra_body,
            "model": self.model,
            "messages": build_messages(pair),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed_for(path_index),  # vLLM and llama.cpp honour it: path i is reproducible
        }
        payload = json.dumps(body).encode("utf-8")
        started = time.perf_counter()
        attempts = 0
        last_error = ""
        while True:
            attempts += 1
            try:
                with self._slots:
                    response = self._post(payload)
                break
            except _FatalError as exc:
                return ReasoningPath.failed(f"{REJECTED_ERROR} {exc}", _ms_since(started))
            except _OversizedReply as exc:
                return ReasoningPath.failed(f"{PARSE_ERROR} {exc}", _ms_since(started))
            except _RetryableError as exc:
                last_error = str(exc)
                if attempts > self.max_retries:
                    return ReasoningPath.failed(
                        f"{TRANSIENT_ERROR} gave up after {attempts} attempts: {last_error}", _ms_since(started)
                    )
                time.sleep(self._delay(attempts, exc.retry_after_s))
        latency_ms = _ms_since(started)  # whole path, retries and waits included: what the run pays

        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return ReasoningPath.failed(f"{TRANSIENT_ERROR} response has no choices[0].message.content", latency_ms)
        usage = response.get("usage") or {}
        path = parse_judgement(content if isinstance(content, str) else None)
        return replace(
            path,
            latency_ms=latency_ms,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    def _delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        # Exponential backoff with "equal jitter": spreads retries of many threads hitting one limit.
        ceiling = min(self.max_backoff_s, self.backoff_s * (2 ** (attempt - 1)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _post(self, payload: bytes) -> dict:
        api_key = self._api_key()
        try:
            return self._exchange(payload, api_key)
        except (_RetryableError, _FatalError) as exc:
            exc.args = (mask_secrets(str(exc), [api_key] if api_key else []),)
            raise

    def _exchange(self, payload: bytes, api_key: str | None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=payload, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as reply:
                raw = reply.read(self.max_response_bytes + 1)
        except urllib.error.HTTPError as exc:
            detail = _read_quietly(exc)
            if 300 <= exc.code < 400:
                raise _FatalError(f"HTTP {exc.code}: redirect to {_origin(exc.headers.get('Location'))} not followed "
                                  f"(set base_url to the final address)") from None
            if exc.code in RETRYABLE_STATUS or exc.code >= 500:
                raise _RetryableError(f"HTTP {exc.code}: {detail}", parse_retry_after(exc.headers.get("Retry-After"))) from None
            raise _FatalError(f"HTTP {exc.code}: {detail}") from None
        except (TimeoutError, socket.timeout) as exc:
            raise _RetryableError(f"timeout after {self.timeout_s}s") from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            kind = "timeout" if isinstance(reason, (TimeoutError, socket.timeout)) else "connection error"
            raise _RetryableError(f"{kind}: {reason}") from exc
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _RetryableError(f"connection error: {type(exc).__name__}: {exc}") from exc
        if len(raw) > self.max_response_bytes:
            raise _OversizedReply(f"response body over {self.max_response_bytes} bytes")
        try:
            decoded = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # A 200 with a body that is not JSON (a proxy page, a truncated body): worth one more try.
            raise _RetryableError(f"response body is not JSON: {raw[:120]!r}") from None
        if not isinstance(decoded, dict):
            raise _RetryableError("response body is not a JSON object")
        return decoded


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _read_quietly(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(4 * ERROR_DETAIL_CHARS)[:ERROR_DETAIL_CHARS].decode("utf-8", "replace")
    except Exception:
        return ""


def _origin(url: str | None) -> str:
    """scheme://host[:port] of a URL (never its path, query or credentials), for messages."""
    if not url:
        return "an unnamed location"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" if parts.hostname else "a relative location"
