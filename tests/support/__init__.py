"""Shared test support: harnesses for kmock, the operator process and mail servers."""
