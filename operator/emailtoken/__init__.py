"""emailtoken-operator: OAuth 2.0 access tokens for mail tasks, kept fresh in Kubernetes Secrets."""

__version__ = "0.1.0"

GROUP = "emailtoken.io"
VERSION = "v1alpha1"
PLURAL = "emailtokens"
KIND = "EmailToken"
API_VERSION = f"{GROUP}/{VERSION}"
