"""Operator-wide settings chosen on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from emailtoken import clientauth, mailhosts
from emailtoken.apicheck import API_TIMEOUT
from emailtoken.endpoints import DEFAULT_ALLOWED_HOSTS
from emailtoken.mailhosts import MailHost
from emailtoken.timing import DEFAULT_KEEPALIVE, MIN_REFRESH_INTERVAL

#: Beyond the provider timeout, how long a stopping operator waits for refreshes in flight to store
#: their rotated refresh tokens (a grant write or two).
STOP_MARGIN = 5.0


@dataclass(frozen=True)
class OperatorConfig:
    """What ``emailtoken run`` was asked to do."""

    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = True
    redirect_base_url: str | None = None
    admin_url: str | None = None
    ca_bundle: str | None = None
    #: provider hosts tokens may name (emailtoken.endpoints); the installer adds to the defaults
    allowed_provider_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    #: mail servers spec.loginProbe may connect to (emailtoken.mailhosts); the installer adds to the defaults
    allowed_mail_hosts: tuple[MailHost, ...] = mailhosts.from_args(())
    provider_timeout: float = 20.0
    #: seconds to connect to the Kubernetes API server, and for each answer, at start (emailtoken.apicheck)
    api_timeout: float = API_TIMEOUT
    #: what spec.federatedCredential may use: audiences, ambient namespaces, token files (emailtoken.clientauth)
    federation: clientauth.Federation = clientauth.DEFAULTS
    concurrency: int = 16
    keepalive: timedelta = DEFAULT_KEEPALIVE
    min_refresh_interval: timedelta = MIN_REFRESH_INTERVAL
    #: how long before a grant's known end to warn (emailtoken.advisories)
    grant_warning: timedelta = timedelta(days=3)
    routine_events: bool = False
    watch_timeout: int = 300
    health_port: int | None = 8080
    metrics_port: int | None = None
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "emailtoken-operator"
    #: at least provider_timeout + 5 s (emailtoken.leader.timing_problem)
    lease_duration: float = 30.0
    log_format: str = "plain"
    verbose: bool = False
    #: least severe level logged: debug, info, warning or error
    log_level: str = "info"

    @property
    def stop_grace(self) -> float:
        """Seconds a stopping operator gives a refresh in flight to end and store its rotated refresh
        token: the scheduler's drain, the engine's persist grace and the runner's wait for kopf. The
        chart's terminationGracePeriodSeconds must exceed it."""
        return self.provider_timeout + STOP_MARGIN
