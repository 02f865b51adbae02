"""The embedded API's kubectl views: field selectors and printer columns as the API server evaluates them."""

from __future__ import annotations

from emailtoken_dev import kubeviews

TOKEN = {
    "metadata": {"name": "a", "namespace": "mail", "creationTimestamp": "2000-01-01T00:00:00Z"},
    "spec": {"provider": "Google"},
    "status": {"conditions": [{"type": "Authorized", "status": "False"}, {"type": "Ready", "status": "True"}]},
}


def test_field_selector_equal_and_not_equal() -> None:
    terms = kubeviews.field_selector({"fieldSelector": "metadata.name=a,metadata.namespace!=other"})
    assert kubeviews.selected(TOKEN, terms)
    assert not kubeviews.selected(TOKEN, kubeviews.field_selector({"fieldSelector": "metadata.name==b"}))
    assert kubeviews.selected(TOKEN, kubeviews.field_selector({}))


def test_printer_column_paths_and_table() -> None:
    assert kubeviews.jsonpath(TOKEN, '.status.conditions[?(@.type=="Ready")].status') == "True"
    assert kubeviews.jsonpath(TOKEN, ".status.phase") is None
    columns = [
        {"name": "Provider", "jsonPath": ".spec.provider"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    table = kubeviews.table([TOKEN], columns, "1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Provider", "Age"]
    assert table["rows"][0]["cells"][:2] == ["a", "Google"]
    assert table["rows"][0]["cells"][2].endswith("d")


def test_table_only_when_kubectl_asks_for_v1() -> None:
    kubectl = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    assert kubeviews.wants_table({"Accept": kubectl})
    assert not kubeviews.wants_table({"Accept": "application/json"})
