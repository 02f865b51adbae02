"""Development tools for emailtoken-operator, shipped apart from the runtime (distribution
``emailtoken-operator-dev``; the image does not install it).

- :mod:`emailtoken_dev.devprovider`: a local OAuth provider speaking the Entra ID and Google
  protocols over HTTPS, with a control API (tests, benchmark, demo);
- :mod:`emailtoken_dev.localapi`: an embedded Kubernetes API (kmock);
- :mod:`emailtoken_dev.demo`: the ``emailtoken demo`` subcommand.

The runtime package ``emailtoken`` never imports this one (``emailtoken.cli`` looks the demo
up by name and says how to install it when it is absent).
"""
