"""Start kopf with the operator's handlers and settings."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from emailtoken.settings import OperatorConfig

_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL, "json": kopf.LogFormat.JSON}


def operator_kwargs(config: OperatorConfig, memo: dict[str, Any] | None = None) -> dict[str, Any]:
    """Arguments for ``kopf.operator``/``kopf.run`` derived from the config."""
    import emailtoken.handlers  # noqa: F401  (registers the handlers)

    return {
        "clusterwide": config.all_namespaces,
        "namespaces": list(config.namespaces),
        "standalone": config.peering is None,
        "peering_name": config.peering,
        "liveness_endpoint": f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None,
        "memo": kopf.Memo(config=config, **(memo or {})),
    }


def configure_logging(config: OperatorConfig) -> None:
    """kopf's log setup, plus quiet third-party loggers that could echo HTTP bodies."""
    kopf.configure(verbose=config.verbose, log_format=_FORMATS[config.log_format])
    for noisy in ("urllib3", "msal", "google", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_operator(config: OperatorConfig) -> int:
    """Run until interrupted (blocking)."""
    configure_logging(config)
    if config.metrics_port:
        from emailtoken import metrics

        metrics.serve(config.metrics_port)
    asyncio.run(kopf.operator(**operator_kwargs(config)))
    return 0
