"""emailtoken-operator: OAuth 2.0 access tokens for mail tasks, kept fresh in Kubernetes Secrets."""

__version__ = "0.1.0"

from emailtoken.api import API_VERSION, GROUP, KIND, PLURAL, VERSION

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "__version__"]
