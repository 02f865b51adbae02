"""The harness as a consumer: a sampler that keeps reading every consumer Secret.

It talks to the API as the harness (User-Agent :data:`HARNESS_AGENT`), so the API
server does not count it against the subject. (What the subject wrote and when is
recorded by the API server itself, see :mod:`bench.kubeserver`.)
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from datetime import datetime
from typing import Any

import requests

from bench.kubeserver import HARNESS_AGENT

log = logging.getLogger("bench")
Key = tuple[str, str]


def parse_time(text: str) -> float:
    """RFC 3339 (``2026-11-29T01:02:03Z``) to epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def session() -> requests.Session:
    """An HTTP session that the API server counts as the harness."""
    s = requests.Session()
    s.trust_env = False
    s.headers["User-Agent"] = f"{HARNESS_AGENT}/harness"
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=16)
    s.mount("http://", adapter)
    return s


class Sampler:
    """A consumer: reads every consumer Secret over and over and checks expires_at against now."""

    def __init__(
        self,
        url: str,
        namespaces: list[str],
        consumers: set[Key],
        interval: float = 1.0,
        http: requests.Session | None = None,
    ) -> None:
        self.url, self.namespaces, self.consumers, self.interval = url, namespaces, consumers, interval
        self.http = http or session()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="sampler", daemon=True)
        self.passes = 0
        self.samples = 0
        self.expired = 0
        self.missing = 0
        self.min_remaining: float | None = None
        self.pass_seconds: list[float] = []
        self.expired_examples: list[dict[str, Any]] = []

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(30)

    def _main(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._pass()
            except Exception as exc:
                log.warning("sampler pass failed: %s", type(exc).__name__)
            self.pass_seconds.append(time.monotonic() - started)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _pass(self) -> None:
        for namespace in self.namespaces:
            response = self.http.get(f"{self.url}/api/v1/namespaces/{namespace}/secrets", timeout=60)
            now = time.time()
            response.raise_for_status()
            for item in response.json().get("items") or []:
                meta = item.get("metadata") or {}
                key = (meta.get("namespace", namespace), meta.get("name", ""))
                if key not in self.consumers:
                    continue
                raw = (item.get("data") or {}).get("expires_at")
                if not raw:
                    self.missing += 1
                    continue
                remaining = parse_time(base64.b64decode(raw).decode()) - now
                self.samples += 1
                if self.min_remaining is None or remaining < self.min_remaining:
                    self.min_remaining = remaining
                if remaining <= 0:
                    self.expired += 1
                    if len(self.expired_examples) < 10:
                        self.expired_examples.append({"secret": "/".join(key), "remaining_s": round(remaining, 2)})
        self.passes += 1

    def summary(self) -> dict[str, Any]:
        """JSON form."""
        passes = sorted(self.pass_seconds)
        return {
            "passes": self.passes,
            "samples": self.samples,
            "expired_seen": self.expired,
            "min_remaining_s": round(self.min_remaining, 2) if self.min_remaining is not None else None,
            "pass_seconds_median": round(passes[len(passes) // 2], 3) if passes else None,
            "pass_seconds_max": round(passes[-1], 3) if passes else None,
            "expired_examples": self.expired_examples,
        }
