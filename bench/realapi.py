"""The benchmark's Kubernetes API as a real control plane: etcd + kube-apiserver, counted by its own metrics.

``bench.run --api real`` runs the same phases against the kube-apiserver of
``tests.support.cluster.ControlPlane`` (binaries from ``$KUBEBUILDER_ASSETS``, default
``.k8s-assets``; no kube-controller-manager: none of its controllers touches what the
benchmark measures, and it would share the two cores). What kmock's ``/_bench`` routes
give (``bench.kubeserver``) comes from elsewhere here:

* **requests**: ``apiserver_request_total`` from the API server's ``/metrics`` (by verb and
  resource), scraped at every phase boundary. The counter has no client label, so the
  harness's own requests (creating, sampling as a consumer, its watches; counted by this
  module at the client) and the control plane's own background (its identity Lease, ...,
  measured as a rate for :data:`BACKGROUND_S` before the subject starts) are subtracted.
  The API server records a WATCH when it ends; a long watch is counted in the window where
  it ends.
* **tracks and summary**: the harness watches EmailTokens and Secrets itself and records
  each new ``expires_at`` and (``nextRefreshTime``, Ready) with the time it saw them (a few
  milliseconds after the write).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from bench.procs import REPO, ProcStats, proc_stats

log = logging.getLogger("bench")
CRD_FILE = REPO / "crds" / "emailtokens.emailtoken.io.yaml"
#: Seconds of quiet before the subject starts, to measure the control plane's own requests.
BACKGROUND_S = 20.0
_METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_VERB = {"apply": "patch", "post": "create", "put": "update"}


def parse_request_totals(text: str) -> Counter[str]:
    """``apiserver_request_total`` summed by ``"verb resource[/subresource]"`` (resource requests only)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        match = _METRIC.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        resource = labels.get("resource", "")
        if not resource:
            continue
        if labels.get("subresource"):
            resource = f"{resource}/{labels['subresource']}"
        verb = labels.get("verb", "").lower()
        out[f"{_VERB.get(verb, verb)} {resource}"] += int(float(match["value"]))
    return out


def mean_durations(text: str) -> dict[str, dict[str, float]]:
    """From ``apiserver_request_duration_seconds``: count and mean seconds by ``"verb resource"``
    (writes wait for etcd's commit, so this is where a slow disk shows)."""
    sums: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        for suffix, into in (("_sum{", sums), ("_count{", counts)):
            head = "apiserver_request_duration_seconds" + suffix
            if line.startswith(head):
                labels_text, _, value = line[len(head) :].rpartition("} ")
                labels = dict(_LABEL.findall(labels_text))
                if labels.get("resource"):
                    resource = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
                    verb = labels.get("verb", "").lower()
                    into[f"{_VERB.get(verb, verb)} {resource}"] += float(value)
    return {
        k: {"count": int(counts[k]), "mean_s": round(sums[k] / counts[k], 4)}
        for k in counts
        if counts[k] and not k.startswith("watch ")
    }


def client_key(method: str, url: str) -> str | None:
    """``"verb resource"`` of a request the harness makes, the way the API server labels it."""
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource, named = rest[0], len(rest) > 1
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method)
    if verb is None:
        watch = parse_qs(parsed.query).get("watch", ["0"])[0] in ("1", "true")
        verb = "watch" if watch else ("get" if named else "list")
    return f"{verb} {resource}"


class Pid:
    """A process of the control plane, as the harness's ``Child`` exposes one (stats, alive)."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.name, self.proc = name, proc

    def stats(self) -> ProcStats:
        """Resource use so far."""
        return proc_stats(self.proc.pid)

    def alive(self) -> bool:
        """Still running?"""
        return self.proc.poll() is None


def _epoch(text: str) -> float:
    from bench.observe import parse_time

    return parse_time(text)


class RealApi:
    """A control plane for one run, with the harness's request accounting and write tracks."""

    def __init__(self, workdir: Path) -> None:
        from tests.support.cluster import ControlPlane

        folder = Path(os.environ.get("KUBEBUILDER_ASSETS") or REPO / ".k8s-assets")
        etcd = folder / "etcd"
        assets = {
            "apiserver": str(folder / "kube-apiserver"),
            "etcd": str(etcd) if etcd.exists() else shutil.which("etcd"),
            "controller_manager": None,
        }
        (workdir / "k8s").mkdir(parents=True, exist_ok=True)
        self.plane = ControlPlane(workdir / "k8s", assets)
        self.url = self.plane.url
        self.kubeconfig = self.plane.admin_kubeconfig
        self.own: Counter[str] = Counter()
        self._own_lock = threading.Lock()
        self.snapshots: dict[float, Counter[str]] = {}
        self.background: dict[str, float] = {}  # requests per second by "verb resource"
        self.secret_tracks: list[tuple[float, str, str, float]] = []
        self.token_tracks: list[tuple[float, str, str, float | None, bool]] = []
        self.secret_state: dict[tuple[str, str], tuple[float, float, float]] = {}
        self.token_state: dict[tuple[str, str], tuple[float | None, bool, float | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.rows: list[list[Any]] = []  # kmock's request log; none here (counts come from snapshots)

    # -- set-up -------------------------------------------------------------------------

    def session(self) -> requests.Session:
        """An admin session whose requests are counted as the harness's."""
        http = self.plane.session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=16)
        http.mount("https://", adapter)

        def count(response: requests.Response, *_: Any, **__: Any) -> None:
            key = client_key(response.request.method or "GET", response.request.url or "")
            if key and not key.startswith("watch "):  # a watch is counted when it ends
                with self._own_lock:
                    self.own[key] += 1

        http.hooks["response"].append(count)
        return http

    def start(self) -> None:
        """Control plane up, CRD served, trackers watching, background measured."""
        self.plane.start()
        self.plane.kubectl("apply", "--server-side", "-f", str(CRD_FILE))
        self.plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/emailtokens.emailtoken.io")
        http = self.plane.session()
        deadline = time.monotonic() + 60
        while http.get(f"{self.url}/apis/emailtoken.io/v1alpha1", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("emailtoken.io/v1alpha1 not served")
            time.sleep(0.2)
        self.processes = {
            "kube": Pid("kube", self.plane.procs["kube-apiserver"]),
            "etcd": Pid("etcd", self.plane.procs["etcd"]),
        }
        for path in ("/apis/emailtoken.io/v1alpha1/emailtokens", "/api/v1/secrets"):
            threading.Thread(target=self._follow, args=(path,), name=f"track {path}", daemon=True).start()
        time.sleep(2)
        before, t0 = self._scrape(), time.time()
        time.sleep(BACKGROUND_S)
        after, t1 = self._scrape(), time.time()
        self.background = {k: (after[k] - before[k]) / (t1 - t0) for k in after if after[k] > before[k]}
        log.info(
            "control plane's own requests per minute: %s", {k: round(v * 60, 1) for k, v in self.background.items()}
        )

    def stop(self) -> None:
        """Stop the trackers and the control plane."""
        self._stop.set()
        self.plane.stop()

    # -- requests -----------------------------------------------------------------------

    def _scrape(self) -> Counter[str]:
        text = self.plane.session().get(f"{self.url}/metrics", timeout=30).text
        totals = parse_request_totals(text)
        with self._own_lock:
            totals.subtract(self.own)
        return totals

    def snapshot(self, t: float) -> None:
        """Request totals (harness's own subtracted) as of a phase boundary ``t`` (now)."""
        self.snapshots[t] = self._scrape()

    def counts(self, start: float, end: float) -> Counter[str]:
        """The subject's requests between two snapshots, less the control plane's background."""
        a = self.snapshots[min(self.snapshots, key=lambda t: abs(t - start))]
        b = self.snapshots[min(self.snapshots, key=lambda t: abs(t - end))]
        out: Counter[str] = Counter()
        for key in set(a) | set(b):
            n = b[key] - a[key] - round(self.background.get(key, 0.0) * (end - start))
            if n > 0:
                out[key] = n
        return out

    # -- tracks -------------------------------------------------------------------------

    def _follow(self, path: str) -> None:
        """List, then watch ``path`` for good (relist on 410 Gone or a broken stream); the harness's
        own requests, so that a relist is not counted as the subject's."""
        http = self.session()
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    listing = http.get(f"{self.url}{path}", timeout=120).json()
                    for item in listing.get("items") or []:
                        self._track(path, item)
                    version = listing["metadata"]["resourceVersion"]
                params = {
                    "watch": "1",
                    "allowWatchBookmarks": "true",
                    "resourceVersion": version,
                    "timeoutSeconds": "3600",
                }
                with http.get(f"{self.url}{path}", params=params, stream=True, timeout=(10, 120)) as stream:
                    for line in stream.iter_lines():
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            version = ""
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._track(path, event["object"])
            except (requests.RequestException, ValueError, KeyError) as exc:
                if not self._stop.is_set():
                    log.warning("tracker %s: %s", path, type(exc).__name__)
                    time.sleep(0.5)
            with self._own_lock:
                self.own[client_key("GET", f"{self.url}{path}?watch=1") or ""] += 1

    def _track(self, path: str, raw: dict[str, Any]) -> None:
        now = time.time()
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            if path.endswith("secrets"):
                encoded = (raw.get("data") or {}).get("expires_at")
                if not encoded:
                    return
                expires = _epoch(base64.b64decode(encoded).decode())
                first, _, previous = self.secret_state.get(key, (now, 0.0, None))
                if previous != expires:
                    self.secret_tracks.append((now, *key, expires))
                    self.secret_state[key] = (first, now, expires)
                return
            status = raw.get("status") or {}
            ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            text = status.get("nextRefreshTime")
            plan = _epoch(text) if text else None
            old_plan, old_ready, since = self.token_state.get(key, (None, False, None))
            if ready and not old_ready:
                since = since or now
            if (plan, ready) != (old_plan, old_ready):
                self.token_tracks.append((now, *key, plan, ready))
                self.token_state[key] = (plan, ready, since)

    # -- what bench.scenario.ServerLog offers -------------------------------------------

    def fetch(self) -> list[list[Any]]:
        """No request log here (see :meth:`counts`)."""
        return self.rows

    def stats(self) -> dict[str, Any]:
        """The whole run's totals: the subject's (harness's own subtracted), the harness's, the background."""
        text = self.plane.session().get(f"{self.url}/metrics", timeout=30).text
        return {
            "request_durations": mean_durations(text),
            "subject_and_control_plane": dict(self._scrape()),
            "harness": dict(self.own),
            "background_per_minute": {k: round(v * 60, 2) for k, v in self.background.items()},
        }

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        """As ``bench.kubeserver``'s ``/_bench/summary``."""
        with self._lock:
            tokens, secrets = list(self.token_state.values()), list(self.secret_state.values())
        ready = [s for _, r, s in tokens if r]
        plans = [p for p, _, _ in tokens if p is not None]
        fresh = [last for _, last, _ in secrets if last >= since]
        return {
            "tokens": len(tokens),
            "ready": len(ready),
            "last_ready": max((s for s in ready if s is not None), default=None),
            "min_plan": min(plans, default=None),
            "secrets": len(secrets),
            "last_first_write": max((first for first, _, _ in secrets), default=None),
            "min_expiry": min((e for _, _, e in secrets), default=None),
            "written_since": len(fresh),
            "last_written_since": max(fresh, default=None),
        }

    def tracks(self) -> dict[str, list[Any]]:
        """As ``bench.kubeserver``'s ``/_bench/tracks``."""
        with self._lock:
            return {"secrets": list(self.secret_tracks), "tokens": list(self.token_tracks)}
