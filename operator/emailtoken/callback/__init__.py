"""The callback service (``emailtoken callback``): completes interactive sign-ins.

Two listeners, two audiences:

* the **admin** listener (default ``127.0.0.1:8081``, reached with ``kubectl port-forward``
  so Kubernetes RBAC guards it) lists the EmailTokens like the old admin screen and starts
  a sign-in ("Get Email Token");
* the **public** listener (default ``0.0.0.0:8080``) serves only ``GET /callback`` (where
  the provider sends the browser back with the authorization code) and ``/healthz``.

Nothing is kept between the two legs of a sign-in (the sealed state carries it), so
replicas sharing the state key are interchangeable and a restart loses no sign-in.

Modules, one concern each: :mod:`.pkce` and :mod:`.state` (pure crypto helpers),
:mod:`.csrf`, :mod:`.tokens` (what the admin page shows), :mod:`.signin` (the code
exchange and grant write, shared with ``emailtoken authorize``), :mod:`.pages` (HTML),
:mod:`.admin` and :mod:`.public` (handlers), :mod:`.app` (wiring, headers, logging) and
:mod:`.cli`. The "Add a new email token" form: :mod:`.tokenform` (pure: form to manifest and
errors per field), :mod:`.formpages` (HTML), :mod:`.manage` (handlers) and :mod:`.tokenwrite`
(Create now, edit, delete by server-side apply; only with ``--manage-tokens``).
"""
