"""What a sign-in's answer must hold to become an EmailToken's grant, written once for both
sign-ins: the callback's authorization code and the operator's device code.

The answer must name the account the token is for (:func:`emailtoken.grants.account_problem`)
and carry a refresh token. Each caller adds its own next step (sign in again on the page, or
set the reauthorize annotation) and maps the reason to its own answer (an HTTP status, a
failure kind).
"""

from __future__ import annotations

from dataclasses import dataclass

from emailtoken import grants
from emailtoken.model import EmailTokenSpec
from emailtoken.outcomes import TokenSet

#: Another account signed in than the token is for, or the provider did not say which.
ACCOUNT_MISMATCH = "AccountMismatch"
#: The provider issued no refresh token: nothing to keep refreshing with.
NO_REFRESH_TOKEN = "NoRefreshToken"


@dataclass(frozen=True)
class SignInProblem:
    """Why a sign-in may not become the token's grant: a condition reason and what is wrong
    (without the next step, which the caller knows)."""

    reason: str
    message: str


def sign_in_problem(spec: EmailTokenSpec, result: TokenSet) -> SignInProblem | None:
    """Why ``result`` may not be stored as this token's grant (the wrong account first), or None."""
    problem = grants.account_problem(spec, result.account)
    if problem:
        return SignInProblem(ACCOUNT_MISMATCH, problem)
    if not result.refresh_token:
        return SignInProblem(
            NO_REFRESH_TOKEN, f"{spec.provider} issued no refresh token (offline access was not granted)"
        )
    return None
