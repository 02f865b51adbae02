"""One benchmark run: servers, N app-only EmailTokens, the subject (operator or baseline), the phases.

Timeline of a run (times on the one host clock, measured where the work happens)::

    create ──► all Ready ──► restart ──► resumed ──► idle window ──► steady window ──► stop
               (creation)    (cold start)            (nothing due)   (~2 refresh cycles)

* creation: the subject is up; the harness creates N tokens; until every one is Ready
  (operator: the Ready condition; baseline: its consumer Secret holds a token). The
  baseline, having no watch, is started right after the tokens exist (its best case).
* restart: the subject is stopped (SIGTERM) and started again while no token is due;
  "resumed" is when it has taken up every token again (operator: its /metrics count every
  token, ``emailtoken_tokens`` = N, polled every second; it reads the published tokens from
  its Secret watch, so there is no request per token to count; baseline: it has rewritten
  every Secret).
* idle: from then until the first token is due (operator: the earliest nextRefreshTime in
  status; baseline: the earliest expiry minus the same margin): API writes and provider
  calls here are pure overhead.
* steady: a fixed window of refresh cycles: refreshes are counted at the provider,
  requests at the API server, lateness per refresh from nextRefreshTime in status.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from bench import analysis
from bench.observe import Sampler, session
from bench.procs import Child, ProcStats, child_env
from bench.realapi import RealApi
from emailtoken_dev.localapi import kubeconfig_for

log = logging.getLogger("bench")
Key = tuple[str, str]
CLIENT_SECRET = "bench-client-secret"  # a value the local provider accepts; not a credential anywhere
TENANT = "contoso"


@dataclass(frozen=True)
class Params:
    """What one run does."""

    subject: str  # "operator" or "baseline"
    n: int
    lifetime: int  # access-token lifetime issued by the provider, seconds
    steady: float  # steady window, seconds
    refresh_before: int = 0  # spec.refreshBefore; 0: a third of the lifetime (the product default's ratio)
    concurrency: int = 16  # operator --concurrency and baseline threads alike
    baseline_period: float = 0.0  # 0: half the lifetime
    sample_interval: float = 0.0  # 0: one pass per second per 1,000 tokens (at least 1 s)
    per_namespace: int = 100
    ready_timeout: float = 600.0
    idle_max: float = 0.0  # 0: the whole gap before the first due token
    api: str = "kmock"  # "kmock" (bench.kubeserver) or "real" (etcd + kube-apiserver, bench.realapi)

    @property
    def margin(self) -> int:
        """The refresh margin put in every token's spec."""
        return self.refresh_before or max(1, self.lifetime // 3)

    @property
    def period(self) -> float:
        """The baseline's timer."""
        return self.baseline_period or self.lifetime / 2


def layout(n: int, per_namespace: int) -> list[tuple[str, str, str]]:
    """(namespace, token name, client id) for every token."""
    out = []
    for i in range(n):
        ns = f"bench-{i // per_namespace:03d}"
        out.append((ns, f"tok-{i:05d}", f"client-{i:05d}"))
    return out


def token_body(
    ns: str, name: str, client_id: str, token_url: str, margin: int, emulated: bool = True
) -> dict[str, Any]:
    """An app-only Microsoft EmailToken pointed at the local provider (kmock needs uid and versions set)."""
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if emulated:
        meta.update(uid=f"uid-{ns}-{name}", resourceVersion="1", generation=1)
    return {
        "apiVersion": "emailtoken.io/v1alpha1",
        "kind": "EmailToken",
        "metadata": meta,
        "spec": {
            "provider": "Microsoft",
            "flow": "ClientCredentials",
            "tenantId": TENANT,
            "clientId": client_id,
            "clientSecretRef": {"name": "app-secret", "key": "client_secret"},
            "emailAddress": f"{name}@contoso.example",
            "services": ["IMAP", "SMTP"],
            "tokenUrl": token_url,
            "refreshBefore": f"{margin}s",
        },
    }


def _operator_main() -> list[str]:
    """``-m emailtoken``, or a wrapper script for profiling (``BENCH_OPERATOR_MAIN=path.py``)."""
    wrapper = os.environ.get("BENCH_OPERATOR_MAIN")
    return [wrapper] if wrapper else ["-m", "emailtoken"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerLog:
    """The API server's record of the subject's requests, fetched incrementally."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = session()
        self.rows: list[list[Any]] = []

    def fetch(self) -> list[list[Any]]:
        """Bring the local copy up to date."""
        r = self.http.get(f"{self.url}/_bench/log", params={"since": len(self.rows)}, timeout=120)
        r.raise_for_status()
        self.rows.extend(r.json())
        return self.rows

    def _get(self, path: str, **params: Any) -> Any:
        r = self.http.get(f"{self.url}/_bench/{path}", params=params, timeout=120)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        """Counters by client class."""
        return dict(self._get("stats"))

    def summary(self, since: float = 0.0) -> dict[str, Any]:
        """Ready tokens, consumer Secrets with tokens, earliest plan and expiry (see kubeserver)."""
        return dict(self._get("summary", since=since))

    def tracks(self) -> dict[str, list[list[Any]]]:
        """Every new expires_at of a Secret and every new (nextRefreshTime, Ready) of a token."""
        return dict(self._get("tracks"))


class Run:
    """Runs one configuration once and returns its numbers."""

    def __init__(self, params: Params, workdir: Path) -> None:
        self.p = params
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.layout = layout(params.n, params.per_namespace)
        self.keys: list[Key] = [(ns, name) for ns, name, _ in self.layout]
        self.client_key: dict[str, Key] = {cid: (ns, name) for ns, name, cid in self.layout}
        self.namespaces = sorted({ns for ns, _, _ in self.layout})
        self.children: list[Child] = []
        self.marks: dict[str, float] = {}
        self.subject: Child | None = None
        self.procs: dict[str, dict[str, Any]] = {}
        self.metrics_port = _free_port()

    # -- plumbing ----------------------------------------------------------------------------

    def _child(self, name: str, args: list[str], **env: str) -> Child:
        child = Child(name, args, self.workdir, child_env(**env))
        self.children.append(child)
        return child

    def _start_servers(self) -> None:
        self.etcd: Any = None
        if self.p.api == "real":
            self.real = RealApi(self.workdir)
            self.real.start()
            self.kube, self.etcd = self.real.processes["kube"], self.real.processes["etcd"]
            self.url, self.kubeconfig = self.real.url, self.real.kubeconfig
            self.http_factory: Any = self.real.session
        else:
            self.kube = self._child("kube", [sys.executable, "-m", "bench.kubeserver"])
            self.url = self.kube.start(ready_line=True)["url"]
            self.kubeconfig = self.workdir / "kubeconfig"
            self.kubeconfig.write_text(kubeconfig_for(self.url))
            self.http_factory = session
        config = self.workdir / "clients.json"
        config.write_text(
            json.dumps({"clients": [{"client_id": cid, "client_secret": CLIENT_SECRET} for _, _, cid in self.layout]})
        )
        self.provider = self._child(
            "provider",
            [
                sys.executable,
                "-m",
                "emailtoken_dev.devprovider",
                "--lifetime",
                str(self.p.lifetime),
                "--config",
                str(config),
                "--ca-file",
                str(self.workdir / "ca.pem"),
                "--log-level",
                "WARNING",
            ],
        )
        info = self.provider.start(ready_line=True)
        self.provider_url, self.ca = info["url"], info["ca"]
        self.control = requests.Session()
        self.control.trust_env = False
        self.control.verify = self.ca
        self.control.headers["Authorization"] = f"Bearer {info['control_token']}"
        self.server_log: Any = self.real if self.p.api == "real" else ServerLog(self.url)

    def _start_subject(self, generation: int) -> Child:
        env = {"KUBECONFIG": str(self.kubeconfig)}
        if self.p.subject == "operator":
            child = self._child(
                f"operator-{generation}",
                [
                    sys.executable,
                    *_operator_main(),
                    "run",
                    "--all-namespaces",
                    "--ca-bundle",
                    self.ca,
                    "--allow-provider-host",
                    "127.0.0.1",
                    "--health-port",
                    "0",
                    # as the chart deploys it (metrics on); also the "resumed" signal
                    "--metrics-port",
                    str(self.metrics_port),
                    "--log-format",
                    "plain",
                    "--concurrency",
                    str(self.p.concurrency),
                ],
                **env,
            )
            child.start()
            self._wait(lambda: "emailtoken operator started" in child.tail(100_000) or not child.alive(), 60, "start")
            if not child.alive():
                raise RuntimeError(f"the operator exited:\n{child.tail()}")
        else:
            child = self._child(
                f"baseline-{generation}",
                [
                    sys.executable,
                    "-m",
                    "bench.baseline",
                    "--period",
                    str(self.p.period),
                    "--ca-bundle",
                    self.ca,
                    "--concurrency",
                    str(self.p.concurrency),
                ],
                **env,
            )
            child.start()
        return child

    def _wait(self, predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def _sleep_until(self, t: float) -> None:
        while (left := t - time.time()) > 0:
            time.sleep(min(left, 1.0))

    def _snapshot(self, label: str) -> None:
        children = (("subject", self.subject), ("kube", self.kube), ("etcd", self.etcd), ("provider", self.provider))
        for name, child in children:
            if child is not None and child.alive():
                self.procs.setdefault(label, {})[name] = child.stats()

    def _mark(self, name: str, t: float | None = None) -> None:
        """A phase boundary; against the real API server also a snapshot of its request counters."""
        self.marks[name] = time.time() if t is None else t
        if self.subject is not None and self.subject.alive():  # for bench.spy: the phase and whom to profile
            (self.workdir / "phase").write_text(f"{name} {self.subject.pid}\n")
        if self.p.api == "real":
            self.real.snapshot(self.marks[name])

    # -- phases ------------------------------------------------------------------------------

    def _create(self) -> None:
        http = self.http_factory()
        emulated = self.p.api != "real"
        data = {"client_secret": base64.b64encode(CLIENT_SECRET.encode()).decode()}
        for ns in self.namespaces:
            meta: dict[str, Any] = {"name": "app-secret", "namespace": ns}
            if emulated:
                meta.update(uid=f"uid-{ns}-app", resourceVersion="1")
            else:
                namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                http.post(f"{self.url}/api/v1/namespaces", json=namespace, timeout=30).raise_for_status()
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}
            http.post(f"{self.url}/api/v1/namespaces/{ns}/secrets", json=body, timeout=30).raise_for_status()
        token_url = f"{self.provider_url}/{TENANT}/oauth2/v2.0/token"

        def create(item: tuple[str, str, str]) -> None:
            ns, name, cid = item
            body = token_body(ns, name, cid, token_url, self.p.margin, emulated)
            r = http.post(f"{self.url}/apis/emailtoken.io/v1alpha1/namespaces/{ns}/emailtokens", json=body, timeout=60)
            r.raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, self.layout))

    def _ready(self) -> float | None:
        """When the last token became Ready (baseline: got its first Secret); None: not all yet."""
        s = self.server_log.summary()
        if self.p.subject == "operator":
            return s["last_ready"] if s["ready"] >= self.p.n else None
        return s["last_first_write"] if s["secrets"] >= self.p.n else None

    def _tracked_tokens(self) -> int:
        """``emailtoken_tokens`` from the operator's /metrics (0 while it is not serving)."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        except requests.RequestException:  # not serving yet
            return 0
        for line in text.splitlines():
            if line.startswith("emailtoken_tokens "):
                return int(float(line.split()[1]))
        return 0

    def _resumed_since(self, since: float) -> float | None:
        """When the new subject had taken up every token again (None: not yet)."""
        if self.p.subject == "operator":
            return time.time() if self._tracked_tokens() >= self.p.n else None
        s = self.server_log.summary(since)
        return s["last_written_since"] if s["written_since"] >= self.p.n else None

    def _first_due(self) -> float | None:
        s = self.server_log.summary()
        if self.p.subject == "operator":
            return s["min_plan"]
        return None if s["min_expiry"] is None else s["min_expiry"] - 1.1 * self.p.margin

    def execute(self) -> dict[str, Any]:
        """Run every phase; always stops the processes."""
        try:
            return self._execute()
        finally:
            for child in reversed(self.children):
                child.stop()
            if self.p.api == "real" and hasattr(self, "real"):
                self.real.stop()

    def _execute(self) -> dict[str, Any]:
        p = self.p
        self._start_servers()
        consumers = set(self.keys)
        self.subject = self._start_subject(1) if p.subject == "operator" else None
        self._snapshot("start")

        # creation ---------------------------------------------------------------------------
        self._mark("create_start")
        self._create()
        self.marks["create_end"] = time.time()
        if p.subject == "baseline":
            self.subject = self._start_subject(1)
        self._wait(lambda: self._ready() is not None, p.ready_timeout, f"all {p.n} tokens Ready", 0.25)
        self._mark("all_ready", self._ready() or time.time())
        self._snapshot("ready")
        assert self.subject is not None
        first_hwm = self.subject.stats().hwm_mib
        interval = p.sample_interval or max(1.0, p.n / 1000)
        sampler = Sampler(self.url, self.namespaces, consumers, interval, self.http_factory())
        sampler.start()
        time.sleep(2)

        # restart ------------------------------------------------------------------------------
        self._snapshot("before_restart")
        self._mark("restart_stop")
        self.subject.stop()
        self.marks["restart_spawn"] = time.time()
        self.subject = self._start_subject(2)
        self._wait(
            lambda: self._resumed_since(self.marks["restart_spawn"]) is not None,
            p.ready_timeout,
            "the restarted subject to resume every token",
            1.0 if self.p.subject == "operator" else 0.5,  # a scrape of N tokens' series costs the operator CPU
        )
        self.marks["resumed"] = self._resumed_since(self.marks["restart_spawn"]) or time.time()
        self._snapshot("resumed")
        time.sleep(2)

        # idle ---------------------------------------------------------------------------------
        self._mark("idle_start")
        due = self._first_due()
        idle_end = (due - 1.0) if due is not None else self.marks["idle_start"]
        if p.idle_max:
            idle_end = min(idle_end, self.marks["idle_start"] + p.idle_max)
        idle_end = max(idle_end, self.marks["idle_start"])
        self._sleep_until(idle_end)
        self._mark("idle_end", idle_end)

        # steady -------------------------------------------------------------------------------
        self._mark("steady_start")
        self._snapshot("steady_start")
        self._sleep_until(self.marks["steady_start"] + p.steady)
        self._mark("steady_end")
        self._snapshot("steady_end")
        sampler.stop()
        self.server_log.fetch()
        server_stats = self.server_log.stats()
        calls = self.control.get(f"{self.provider_url}/_control/calls", timeout=120).json()
        self.final = self.server_log.summary()
        tracks = self.server_log.tracks()
        (self.workdir / "tracks.json").write_text(json.dumps(tracks))
        (self.workdir / "api-log.json").write_text(json.dumps(self.server_log.rows))
        (self.workdir / "provider-calls.json").write_text(json.dumps(calls["calls"]))
        result = self._analyse(calls, tracks, sampler, server_stats, first_hwm)
        (self.workdir / "result.json").write_text(json.dumps(result, indent=1))
        return result

    # -- numbers ---------------------------------------------------------------------------

    def _analyse(
        self,
        provider: dict[str, Any],
        tracks: dict[str, list[list[Any]]],
        sampler: Sampler,
        server_stats: dict[str, Any],
        first_hwm: float,
    ) -> dict[str, Any]:
        p, m = self.p, self.marks
        calls: list[dict[str, Any]] = provider["calls"]
        rows = self.server_log.rows
        plans: dict[Key, list[tuple[float, float]]] = {}
        for t, ns, name, plan, _ready in tracks["tokens"]:
            if plan is not None:
                plans.setdefault((ns, name), []).append((t, plan))
        expiries: dict[Key, list[tuple[float, float]]] = {}
        for t, ns, name, expires in tracks["secrets"]:
            expiries.setdefault((ns, name), []).append((t, expires))

        def window(start: float, end: float) -> dict[str, Any]:
            token_calls = analysis.token_calls(calls, start, end)
            published = sum(1 for versions in expiries.values() for seen, _ in versions if start <= seen < end)
            return {
                "seconds": round(end - start, 2),
                "refreshes": published,  # new tokens seen in consumer Secrets
                "token_calls": len(token_calls),
                "provider_calls": len(analysis.all_calls(calls, start, end)),
                "api": analysis.request_counts(self.real.counts(start, end))
                if p.api == "real"
                else analysis.api_counts(rows, start, end),
                "calls": token_calls,
            }

        creation = window(m["create_start"], m["all_ready"] + 0.001)
        restart = window(m["restart_stop"], m["idle_start"])
        idle = window(m["idle_start"], m["idle_end"])
        steady = window(m["steady_start"], m["steady_end"])

        remaining_restart = analysis.remaining_at_refresh(restart["calls"], self.client_key, expiries)
        not_due_margin = sum(1 for r in remaining_restart if r > 1.1 * p.margin + 1)
        early_restart = None
        late: list[float] = []
        if p.subject == "operator":
            early_restart = sum(1 for x in analysis.lateness(restart["calls"], self.client_key, plans) if x < -0.5)
            late = analysis.lateness(steady["calls"], self.client_key, plans)
        remaining = analysis.remaining_at_refresh(steady["calls"], self.client_key, expiries)

        refreshes = steady["refreshes"]
        per_refresh = (lambda x: round(x / refreshes, 3)) if refreshes else (lambda x: None)
        procs = self.procs

        def cpu(name: str, a: str, b: str) -> float | None:
            try:
                return round(procs[b][name].cpu_s - procs[a][name].cpu_s, 3)
            except KeyError:
                return None

        subject_cpu_steady = cpu("subject", "steady_start", "steady_end")
        end_stats: ProcStats | None = procs.get("steady_end", {}).get("subject")
        out: dict[str, Any] = {
            "params": {**asdict(p), "margin_s": p.margin, "period_s": p.period if p.subject == "baseline" else None},
            "marks": {k: round(v, 3) for k, v in m.items()},
            "ready": {
                "create_seconds": round(m["create_end"] - m["create_start"], 2),
                "all_ready_s": round(m["all_ready"] - m["create_start"], 2),
                "after_last_create_s": round(m["all_ready"] - m["create_end"], 2),
                "refreshes": creation["refreshes"],
                "api": creation["api"],
                "subject_cpu_s": cpu("subject", "start", "ready") if p.subject == "operator" else None,
                "subject_hwm_mib": round(first_hwm, 1),
            },
            "restart": {
                "coldstart_s": round(m["resumed"] - m["restart_spawn"], 2),
                "downtime_s": round(m["restart_spawn"] - m["restart_stop"], 2),
                "refreshes": restart["refreshes"],
                "not_due_refreshes": not_due_margin,
                "early_refreshes": early_restart,
                "api": restart["api"],
                "tokens_not_ready_at_end": 0 if p.subject == "baseline" else p.n - self.final["ready"],
                "subject_cpu_s": round(procs["resumed"]["subject"].cpu_s, 3)
                if "subject" in procs.get("resumed", {})
                else None,
            },
            "idle": {
                "seconds": idle["seconds"],
                "token_writes": idle["api"]["token_writes"],
                "api_writes": idle["api"]["writes"],
                "api_reads": idle["api"]["reads"],
                "provider_calls": idle["provider_calls"],
                "api": idle["api"],
            },
            "steady": {
                "seconds": steady["seconds"],
                "refreshes": refreshes,
                "token_calls": steady["token_calls"],
                "provider_calls": steady["provider_calls"],
                "provider_calls_per_refresh": per_refresh(steady["provider_calls"]),
                # from each token's interval between refreshes (window counts are biased, see analysis)
                **analysis.steady_rates(calls, m["steady_start"], m["steady_end"], p.lifetime),
                # what timing.py predicts (operator) or the loop's period gives (baseline), to compare
                "model_calls_per_token_lifetime": analysis.modelled_calls(p.lifetime, p.margin)["per_lifetime"]
                if p.subject == "operator"
                else round(p.lifetime / p.period, 3),
                "api_reads": steady["api"]["reads"],
                "api_writes": steady["api"]["writes"],
                "api_reads_per_refresh": per_refresh(steady["api"]["reads"]),
                "api_writes_per_refresh": per_refresh(steady["api"]["token_writes"]),
                "api_writes_per_refresh_with_lease": per_refresh(steady["api"]["writes"]),
                "lease_writes_per_minute": round(steady["api"]["lease_writes"] / steady["seconds"] * 60, 1)
                if steady["seconds"]
                else None,
                "api": steady["api"],
                "lateness_s": analysis.summary(late) if p.subject == "operator" else None,
                "remaining_at_refresh_s": analysis.summary(remaining),
                "subject_cpu_s": subject_cpu_steady,
                "subject_cpu_ms_per_refresh": round(subject_cpu_steady * 1000 / refreshes, 2)
                if refreshes and subject_cpu_steady is not None
                else None,
                "kube_cpu_s": cpu("kube", "steady_start", "steady_end"),
                "etcd_cpu_s": cpu("etcd", "steady_start", "steady_end"),
                "provider_cpu_s": cpu("provider", "steady_start", "steady_end"),
            },
            "consumer": {
                **sampler.summary(),
                "exposure": analysis.expired_exposure(expiries, m["all_ready"], m["steady_end"]),
            },
            "process": {
                "subject_rss_mib": round(end_stats.rss_mib, 1) if end_stats else None,
                "subject_hwm_mib": round(end_stats.hwm_mib, 1) if end_stats else None,
                "snapshots": {label: {k: v.to_dict() for k, v in stats.items()} for label, stats in procs.items()},
            },
            "server_counters": server_stats,
            "provider_counters": provider.get("counters"),
            "subject_log_warnings": self._log_warnings(),
        }
        if not math.isfinite(out["steady"]["seconds"]):
            raise AssertionError("bad window")
        return out

    def _log_warnings(self) -> int:
        count = 0
        for child in self.children:
            if child.name.startswith(("operator", "baseline")):
                text = child.tail(50_000_000)
                count += sum(1 for line in text.splitlines() if "WARNING" in line or "ERROR" in line)
        return count


def run_once(params: Params, workdir: Path) -> dict[str, Any]:
    """Run one configuration once."""
    return Run(params, workdir).execute()
