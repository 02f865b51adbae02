"""``kubectl emailtoken``: list, inspect and nudge EmailTokens with your kubeconfig.

kubectl finds ``kubectl-emailtoken`` on ``$PATH`` and passes it every argument after
``emailtoken`` unchanged (kubectl does not interpret ``--context`` or ``-n`` for plugins),
so the usual flags are parsed here: ``-n/--namespace``, ``-A/--all-namespaces``,
``--context`` and ``--kubeconfig`` (default ``$KUBECONFIG``, then ``~/.kube/config``).

    kubectl emailtoken list [-n NS | -A]
    kubectl emailtoken status NAME [-n NS]
    kubectl emailtoken refresh NAME [-n NS] [--wait]
    kubectl emailtoken reauthorize NAME [-n NS]
    kubectl emailtoken authorize NAME [-n NS] [emailtoken authorize options]

``refresh`` and ``reauthorize`` only set an annotation (``emailtoken.io/refresh-now``,
``emailtoken.io/reauthorize``) to the current time, with a merge patch of
``metadata.annotations``: the spec is never written, so GitOps sees no drift, and the
caller needs ``patch`` on ``emailtokens`` (the operator itself does not). Nothing secret
is ever read or printed: only the EmailToken and its Events are fetched.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from emailtoken.api import (
    ANNOTATION_REAUTHORIZE,
    ANNOTATION_REFRESH_NOW,
    GROUP,
    PLURAL,
    VERSION,
    consumer_secret_name,
)
from emailtoken.apicheck import API_TIMEOUT_ENV, default_api_timeout
from emailtoken.timefmt import parse_duration, parse_rfc3339

MERGE_PATCH = "application/merge-patch+json"
#: Events shown by ``status`` (newest last, like ``kubectl describe``).
MAX_EVENTS = 10


class PluginError(Exception):
    """A failure to report in one line (exit code 1)."""


# -- time in words ---------------------------------------------------------------------------


def human_duration(delta: timedelta) -> str:
    """kubectl's compact durations: 45s, 5m30s, 3h, 2d4h (sign dropped)."""
    seconds = int(abs(delta.total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    return f"{days}d"


def relative(moment: datetime, now: datetime) -> str:
    """``in 5m`` / ``5m ago``."""
    delta = moment - now
    return f"in {human_duration(delta)}" if delta.total_seconds() > 0 else f"{human_duration(delta)} ago"


def _parse_time(text: Any) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def when(text: Any, now: datetime) -> str:
    """``2026-11-29T01:02:03Z (in 5m)``, or ``-`` when unset."""
    moment = _parse_time(text)
    return f"{text} ({relative(moment, now)})" if moment is not None else "-"


# -- the Kubernetes API -----------------------------------------------------------------------


class Cluster:
    """The few API calls the plugin makes, with the user's kubeconfig credentials.

    Every call is bounded (``timeout`` seconds to connect, and again for the answer) and tried
    once: a failure is one line that says what is wrong and what to do (:mod:`emailtoken.apicheck`).
    """

    def __init__(self, kubeconfig: str | None, context: str | None, *, timeout: float | None = None) -> None:
        import kubernetes

        from emailtoken.apicheck import default_api_timeout
        from emailtoken.kube import ConfigError, load_config

        configuration = kubernetes.client.Configuration()
        try:
            self.creds = load_config(
                kubeconfig=kubeconfig, context=context, configuration=configuration, in_cluster_first=False
            )
        except ConfigError as exc:
            raise PluginError(str(exc)) from None
        configuration.retries = 0  # one attempt, bounded by the timeout: no urllib3 retry warnings
        self.timeout = timeout or default_api_timeout()
        self.namespace = self.creds.namespace or (_incluster_namespace() if self.creds.in_cluster else "default")
        client = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)

    def _call(self, fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        from emailtoken.kube import unreachable

        try:
            data = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs).data
        except ApiException as exc:
            raise PluginError(self._failure(exc, what)) from None
        except (HTTPError, OSError) as exc:
            raise PluginError(self._explain(unreachable(exc))) from None
        return json.loads(data) if data else {}

    def _failure(self, exc: Any, what: str) -> str:
        """One line for an API error: a missing object by name, anything else as :func:`_explain` says."""
        from emailtoken.kube import KubeError, Unreachable

        try:
            body = json.loads(exc.body or "")
        except (ValueError, TypeError):
            body = None  # not a Status: not the API server's answer about an object (no such API)
        if not isinstance(body, dict):
            body = None
        if exc.status == 404 and body is not None:
            return f"{what} not found"
        if not exc.status:  # the client's wrapping of a TLS failure
            return self._explain(Unreachable(str(exc.reason or "TLS error")))
        return self._explain(KubeError(exc.status, str((body or {}).get("message") or exc.reason or "")))

    def _explain(self, error: Any) -> str:
        from emailtoken.apicheck import explain

        hint = "ask a cluster admin for that permission (kubectl auth can-i --list shows yours)"
        return explain(error, self.creds, timeout=self.timeout, rbac_hint=hint)

    def list_tokens(self, namespace: str | None) -> list[dict[str, Any]]:
        """EmailTokens of one namespace, or of all when ``namespace`` is None."""
        if namespace is None:
            body = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, what="emailtokens")
        else:
            body = self._call(
                self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, what="emailtokens"
            )
        items = body.get("items") or []
        if namespace is not None:  # some API doubles ignore the namespace of a list
            items = [i for i in items if (i.get("metadata") or {}).get("namespace") == namespace]
        return sorted(items, key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))

    def get_token(self, namespace: str, name: str) -> dict[str, Any]:
        """One EmailToken; PluginError when missing."""
        return self._call(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            what=f'emailtoken "{name}" in namespace "{namespace}"',
        )

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
        """Merge-patch metadata.annotations only (never spec)."""
        return self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": dict(annotations)}},
            _content_type=MERGE_PATCH,
            what=f'emailtoken "{name}" in namespace "{namespace}"',
        )

    def events_for(self, token: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The token's Events, oldest first."""
        meta = token.get("metadata") or {}
        body = self._call(
            self.core.list_namespaced_event,
            meta.get("namespace"),
            field_selector=f"involvedObject.name={meta.get('name')},involvedObject.kind=EmailToken",
            what="events",
        )
        uid = meta.get("uid")
        mine = []
        for event in body.get("items") or []:  # filter again: a selector may be ignored
            ref = event.get("involvedObject") or {}
            if ref.get("name") != meta.get("name") or ref.get("kind", "EmailToken") != "EmailToken":
                continue
            if uid and ref.get("uid") and ref.get("uid") != uid:
                continue  # an earlier object of the same name
            mine.append(event)
        return sorted(mine, key=lambda e: _event_time(e) or datetime.min.replace(tzinfo=UTC))


def _incluster_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    for field in ("lastTimestamp", "eventTime", "firstTimestamp"):
        moment = _parse_time(event.get(field))
        if moment is not None:
            return moment
    return _parse_time((event.get("metadata") or {}).get("creationTimestamp"))


# -- reading a token ---------------------------------------------------------------------------


def condition(token: Mapping[str, Any], type_: str) -> dict[str, Any]:
    """The condition of that type, or {}."""
    for cond in (token.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's (three spaces apart)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def list_rows(tokens: Iterable[Mapping[str, Any]], now: datetime, *, all_namespaces: bool) -> list[list[str]]:
    """The rows of ``list`` (header first)."""
    header = ["NAME", "PROVIDER", "FLOW", "EMAIL", "READY", "STATUS", "EXPIRES", "LAST REFRESH", "AGE"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + header]
    for token in tokens:
        meta, spec, status = token.get("metadata") or {}, token.get("spec") or {}, token.get("status") or {}
        expires = _parse_time(status.get("expiresAt"))
        last = _parse_time(status.get("lastRefreshTime"))
        created = _parse_time(meta.get("creationTimestamp"))
        row = [
            meta.get("name", ""),
            spec.get("provider", ""),
            spec.get("flow") or "AuthorizationCode",
            spec.get("emailAddress") or status.get("account") or "-",
            condition(token, "Ready").get("status", "Unknown"),
            status.get("phase") or "Pending",
            relative(expires, now) if expires else "-",
            relative(last, now) if last else "-",
            human_duration(now - created) if created else "-",
        ]
        rows.append(([meta.get("namespace", "")] if all_namespaces else []) + row)
    return rows


def next_step(token: Mapping[str, Any]) -> str | None:
    """What a person should do now, in one sentence (None when nothing)."""
    meta, spec, status = token.get("metadata") or {}, token.get("spec") or {}, token.get("status") or {}
    target = f"{meta.get('name')} -n {meta.get('namespace')}"
    flow = spec.get("flow") or "AuthorizationCode"
    reason = condition(token, "Authorized").get("reason") or condition(token, "Ready").get("reason") or ""
    device = status.get("deviceCode") or {}
    if device.get("userCode"):
        return f"open {device.get('verificationUri')} and enter the code {device.get('userCode')} as the mailbox"
    if reason == "AwaitingAuthorization" and flow == "AuthorizationCode":
        via = f" or open {status['authorizeUrl']}" if status.get("authorizeUrl") else " or use the callback admin page"
        return f"sign in as the mailbox: kubectl emailtoken authorize {target}{via}"
    if reason in ("ReauthorizationRequired", "AccountMismatch", "DeviceCodeExpired", "AuthorizationDeclined"):
        return f"start a new sign-in: kubectl emailtoken reauthorize {target}"
    ref, default_key = spec.get("clientSecretRef"), "client_secret"
    if not ref:
        ref, default_key = spec.get("serviceAccountKeyRef") or {}, "key.json"
    if reason == "InvalidClient":
        return (
            f"check the client ID and the secret in Secret {ref.get('name')} (key {ref.get('key') or default_key}); "
            "the operator retries as soon as that Secret changes"
        )
    if reason == "SecretNotFound":
        return f"create the Secret {ref.get('name')} in namespace {meta.get('namespace')}"
    if reason == "ProviderUnavailable":
        return "nothing: the operator retries with backoff; the current token stays in the Secret until it expires"
    return None


def describe(token: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """``status`` output: what the token is, its conditions, times, sign-in details, Events."""
    meta, spec, status = token.get("metadata") or {}, token.get("spec") or {}, token.get("status") or {}
    flow = spec.get("flow") or "AuthorizationCode"
    lines = [
        f"Name:          {meta.get('name')}",
        f"Namespace:     {meta.get('namespace')}",
        f"Created:       {when(meta.get('creationTimestamp'), now)}",
        f"Provider:      {spec.get('provider', '-')} ({flow})",
        f"Email:         {spec.get('emailAddress') or '-'}",
        f"Account:       {status.get('account') or '-'}",
        f"Secret:        {status.get('secretName') or consumer_secret_name(str(meta.get('name')), spec)}",
        f"Phase:         {status.get('phase') or 'Pending'}",
        "Conditions:",
        *_condition_lines(status, now),
        "Access token:",
        f"  Expires:       {when(status.get('expiresAt'), now)}",
        f"  Last refresh:  {when(status.get('lastRefreshTime'), now)}",
        f"  Next refresh:  {when(status.get('nextRefreshTime'), now) if status.get('nextRefreshTime') else '-'}",
        f"  Failures:      {status.get('refreshFailures') or 0}",
    ]
    sign_in = _sign_in_lines(flow, status, now)
    if sign_in:
        lines += ["Sign-in:", *sign_in]
    step = next_step(token)
    if step:
        lines.append(f"Next step:     {step}")
    lines += _event_lines(events, now)
    return "\n".join(lines)


def _condition_lines(status: Mapping[str, Any], now: datetime) -> list[str]:
    conds = (status.get("conditions") or []) or [{"type": "Ready", "status": "Unknown", "message": "not reported yet"}]
    lines = []
    for cond in conds:
        since = _parse_time(cond.get("lastTransitionTime"))
        head = f"  {cond.get('type')}: {cond.get('status')}"
        if cond.get("reason"):
            head += f" ({cond['reason']}"
            head += f", since {relative(since, now)})" if since else ")"
        lines.append(head)
        if cond.get("message"):
            lines.append(f"    {cond['message']}")
    return lines


def _sign_in_lines(flow: str, status: Mapping[str, Any], now: datetime) -> list[str]:
    lines = []
    if flow == "AuthorizationCode" and status.get("redirectUri"):
        lines.append(f"  Redirect URI:  {status['redirectUri']}  (register it at the provider)")
    if status.get("authorizeUrl"):
        lines.append(f"  Admin page:    {status['authorizeUrl']}")
    device = status.get("deviceCode") or {}
    if device:
        lines.append(f"  Device code:   {device.get('userCode')} at {device.get('verificationUri')}")
        lines.append(f"  Code expires:  {when(device.get('expiresAt'), now)}")
    return lines


def _event_lines(events: Sequence[Mapping[str, Any]], now: datetime) -> list[str]:
    if not events:
        return ["Events:        <none>"]
    rows = [["TYPE", "REASON", "AGE", "MESSAGE"]]
    for event in list(events)[-MAX_EVENTS:]:
        moment = _event_time(event)
        count = int(event.get("count") or 1)
        age = human_duration(now - moment) if moment else "-"
        if count > 1:
            age += f" (x{count})"
        message = " ".join(str(event.get("message") or "").split())
        rows.append([str(event.get("type") or ""), str(event.get("reason") or ""), age, message])
    return ["Events:", *("  " + line for line in table(rows).splitlines())]


# -- commands ----------------------------------------------------------------------------------


def _stamp(now: datetime) -> str:
    """A new annotation value each time (microseconds: two calls in one second still differ)."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cmd_list(cluster: Cluster, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    namespace = None if args.all_namespaces else (args.namespace or cluster.namespace)
    tokens = cluster.list_tokens(namespace)
    if not tokens:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        out(f"No EmailTokens found in {where}.")
        return 0
    out(table(list_rows(tokens, datetime.now(UTC), all_namespaces=namespace is None)))
    return 0


def cmd_status(cluster: Cluster, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    namespace = args.namespace or cluster.namespace
    token = cluster.get_token(namespace, args.name)
    out(describe(token, cluster.events_for(token), datetime.now(UTC)))
    return 0


def _wait_handled(
    cluster: Cluster, namespace: str, name: str, key: str, value: str, timeout: float
) -> dict[str, Any] | None:
    """Poll until the operator recorded ``value`` in status.handledAnnotations[key]."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token = cluster.get_token(namespace, name)
        if ((token.get("status") or {}).get("handledAnnotations") or {}).get(key) == value:
            return token
        time.sleep(0.5)
    return None


def cmd_refresh(cluster: Cluster, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    namespace = args.namespace or cluster.namespace
    cluster.get_token(namespace, args.name)  # a clear "not found" before writing anything
    value = _stamp(datetime.now(UTC))
    cluster.annotate(namespace, args.name, {ANNOTATION_REFRESH_NOW: value})
    out(f"emailtoken {namespace}/{args.name}: {ANNOTATION_REFRESH_NOW}={value}; the operator refreshes it now")
    if not args.wait:
        return 0
    token = _wait_handled(cluster, namespace, args.name, "refreshNow", value, args.timeout.total_seconds())
    if token is None:
        out(f"the operator did not handle the request within {human_duration(args.timeout)} (is it running?)")
        return 1
    ready = condition(token, "Ready")
    status = token.get("status") or {}
    if ready.get("status") == "True" and not status.get("refreshFailures"):
        out(f"refreshed: the access token expires at {when(status.get('expiresAt'), datetime.now(UTC))}")
        return 0
    out(f"refresh failed: {ready.get('reason', 'Unknown')}: {ready.get('message', '')}".rstrip(": "))
    return 1


def cmd_reauthorize(cluster: Cluster, args: argparse.Namespace, out: Callable[[str], None]) -> int:
    namespace = args.namespace or cluster.namespace
    token = cluster.get_token(namespace, args.name)
    flow = (token.get("spec") or {}).get("flow") or "AuthorizationCode"
    value = _stamp(datetime.now(UTC))
    cluster.annotate(namespace, args.name, {ANNOTATION_REAUTHORIZE: value})
    out(f"emailtoken {namespace}/{args.name}: {ANNOTATION_REAUTHORIZE}={value}")
    target = f"{args.name} -n {namespace}"
    if flow == "AuthorizationCode":
        out(f"the grant is dropped; sign in again: kubectl emailtoken authorize {target}")
    elif flow == "DeviceCode":
        out(f"a new device code appears shortly: kubectl emailtoken status {target}")
    else:
        out(
            f"flow {flow} has no sign-in to repeat: the operator records the request and keeps the "
            f"current token (for a new token: kubectl emailtoken refresh {target})"
        )
    return 0


def _authorize_options() -> set[str] | None:
    """Option strings of ``emailtoken authorize``, or None when that command is not installed."""
    if importlib.util.find_spec("emailtoken.authorize") is None:
        return None
    from emailtoken import cli

    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction) and "authorize" in action.choices:
            return set(action.choices["authorize"]._option_string_actions)
    return None


def cmd_authorize(args: argparse.Namespace, extra: list[str], out: Callable[[str], None]) -> int:
    options = _authorize_options()
    if options is None:
        out(
            "error: `kubectl emailtoken authorize` runs `emailtoken authorize NAMESPACE/NAME`, which is not "
            "part of this installation. Sign in through the callback service's admin page "
            "(kubectl emailtoken status NAME shows its link) or use flow DeviceCode."
        )
        return 1
    namespace = args.namespace
    if namespace is None:
        namespace = Cluster(args.kubeconfig, args.context, timeout=args.request_timeout).namespace
    argv = ["authorize", f"{namespace}/{args.name}", *extra]
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.context:
        if "--context" not in options:
            out("error: emailtoken authorize uses the current context; switch with `kubectl config use-context`")
            return 1
        argv += ["--context", args.context]
    from emailtoken import cli

    return cli.main(argv)


def _seconds(text: str) -> float:
    """``--request-timeout``: seconds, or a duration such as 5s or 1m."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = parse_duration(text).total_seconds()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The plugin's command line (global flags are accepted before or after the subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file (default: $KUBECONFIG)")
    common.add_argument(
        "--request-timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        metavar="DURATION",
        help="how long to wait for the API server to accept a connection and to answer each call "
        f"(like 5, 5s or 1m; default {default_api_timeout():g}s, ${API_TIMEOUT_ENV} sets the default)",
    )
    description = __doc__.split("\n\n")[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="kubectl emailtoken", description=description, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", parents=[common], help="list EmailTokens with readiness and expiry")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="all namespaces")
    p = sub.add_parser("status", parents=[common], help="conditions, times, sign-in details and Events of a token")
    p.add_argument("name")
    p = sub.add_parser("refresh", parents=[common], help="refresh the access token now (annotation)")
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="wait until the operator handled it and report")
    p.add_argument("--timeout", type=parse_duration, default=timedelta(seconds=60), help="with --wait (60s)")
    p = sub.add_parser("reauthorize", parents=[common], help="drop the grant and start a new sign-in (annotation)")
    p.add_argument("name")
    p = sub.add_parser("authorize", parents=[common], help="sign in from this machine (emailtoken authorize)")
    p.add_argument("name")
    p = sub.add_parser("validate", help="check EmailToken manifests offline (emailtoken validate)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-q", "--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-emailtoken`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "authorize":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    for flag in ("namespace", "context", "kubeconfig", "request_timeout"):
        setattr(args, flag, getattr(args, flag, None))

    def out(text: str) -> None:
        print(text, flush=True)

    try:
        if args.command == "validate":
            from emailtoken import validate  # no cluster needed, and no engine or OAuth libraries

            return validate.run(args)
        if args.command == "authorize":
            return cmd_authorize(args, extra, out)
        cluster = Cluster(args.kubeconfig, args.context, timeout=args.request_timeout)
        commands = {"list": cmd_list, "status": cmd_status, "refresh": cmd_refresh, "reauthorize": cmd_reauthorize}
        return commands[args.command](cluster, args, out)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
