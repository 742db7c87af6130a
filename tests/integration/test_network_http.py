"""Global network rules and trusted proxies, through the real app in process.

The in-process client is 127.0.0.1 (``admin_harness.CLIENT``). With 127.0.0.0/8 as a trusted
proxy, ``X-Forwarded-For`` names the client, so the table of address spellings from
``address_forms`` can be sent through the whole server: a denied host must never get past, in
any spelling, and a spoofed header from a peer that is not a trusted proxy changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from admin_harness import Actors, LiveApp, bearer, live_app, make_instance, publish_signed

from address_forms import FORMS, Form
from conftest import N_FEATURES, SignerKeys, TrainedModel
from strongroom.core.audit.ports import AuditQuery
from strongroom.core.identity.principal import Role
from strongroom.core.registry.model import Stage
from strongroom.errors import NotFoundError
from strongroom.services.audit_reading import AuditReader

MODEL = "fraud-net"
INFER = f"/v2/models/{MODEL}/infer"
BODY = {
    "inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, N_FEATURES], "data": [0.2] * N_FEATURES}
    ]
}
DENY = ("10.0.0.0/8", "2001:db8::/32")
ALLOW = ("192.0.2.0/24", "127.0.0.0/8")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, signer: SignerKeys) -> Path:
    return make_instance(tmp_path_factory.mktemp("net"), signer)


def _serve(home: Path, signer: SignerKeys, onnx: bytes, **settings: Any) -> Iterator[LiveApp]:
    with live_app(home, **settings) as live:
        try:
            live.parts.registry.list_versions(MODEL)
        except NotFoundError:
            version = publish_signed(live.parts, signer, MODEL, onnx)
            live.parts.lifecycle.promote(MODEL, version, Stage.PRODUCTION, reason="t", actor="t")
            live.parts.host.refresh()
        yield live


@pytest.fixture(scope="module")
def behind_proxy(home: Path, signer: SignerKeys, trained_model: TrainedModel) -> Iterator[LiveApp]:
    """Trusting 127.0.0.0/8 as a proxy; allow and deny lists set."""
    yield from _serve(
        home,
        signer,
        trained_model.onnx,
        trusted_proxies=("127.0.0.0/8",),
        network_allow=ALLOW,
        network_deny=DENY,
    )


def _in(text: str, networks: tuple[str, ...]) -> bool:
    from ipaddress import ip_address, ip_network

    return any(ip_address(text) in ip_network(n) for n in networks)


def expected(form: Form) -> bool:
    if form.parsed is None:
        return False
    if any(_in(host, DENY) for host in (form.parsed, *form.denotes)):
        return False
    return _in(form.parsed, ALLOW)


def _header_safe(text: str) -> bool:
    """What an HTTP header value can carry as is: no CR, LF or NUL, latin-1, and no leading or
    trailing blanks (HTTP strips those, so the server sees another form, tested on its own)."""
    return (
        not any(c in text for c in "\r\n\x00")
        and all(ord(c) < 256 for c in text)
        and text == text.strip(" \t")
    )


def test_address_forms_through_a_trusted_proxy_give_no_bypass(behind_proxy: LiveApp) -> None:
    key = Actors(behind_proxy).service("net-caller", Role.PREDICTOR)
    sent, bypasses, wrongly_refused = 0, [], []
    for form in FORMS:
        if not _header_safe(form.text):
            continue
        headers = {**bearer(key), "x-forwarded-for": form.text}
        status = behind_proxy.post(INFER, json=BODY, headers=headers).status_code
        sent += 1
        assert status < 500, (form.text, status)
        admitted = status == 200
        if admitted and not expected(form):
            bypasses.append(form.text)
        if expected(form) and not admitted:
            wrongly_refused.append(form.text)
    assert sent >= 50
    assert bypasses == []
    assert wrongly_refused == []


def test_a_forwarded_client_is_the_one_recorded(behind_proxy: LiveApp) -> None:
    key = Actors(behind_proxy).service("net-recorded", Role.PREDICTOR)
    headers = {**bearer(key), "x-forwarded-for": "10.9.9.9, 192.0.2.44"}  # spoofed left part
    assert behind_proxy.post(INFER, json=BODY, headers=headers).status_code == 200
    records = behind_proxy.parts.audit_service().query(
        AuditQuery(action="model.predict", principal="svc:net-recorded"),
        AuditReader(principal="test", request_id="t"),
    )
    assert records[-1]["client_address"] == "192.0.2.44"
    assert records[-1]["details"]["peer"] == "127.0.0.1"
    denied = {**bearer(key), "x-forwarded-for": "10.1.2.3"}
    answer = behind_proxy.post(INFER, json=BODY, headers=denied)
    assert answer.status_code == 403
    assert answer.json()["code"] == "auth.forbidden"
    malformed = {**bearer(key), "x-forwarded-for": "10.0.0.1, 192.0.2.1:80:90"}
    answer = behind_proxy.post(INFER, json=BODY, headers=malformed)
    assert answer.status_code == 400
    assert "192.0.2.1" not in answer.text  # the header is not echoed


def test_spoofed_headers_from_an_untrusted_peer_change_nothing(
    home: Path, signer: SignerKeys, trained_model: TrainedModel
) -> None:
    # No trusted proxy: the peer (127.0.0.1) is the client, whatever the headers say.
    for live in _serve(home, signer, trained_model.onnx, network_deny=("127.0.0.0/8",)):
        for header in ("x-forwarded-for", "forwarded"):
            value = "192.0.2.1" if header == "x-forwarded-for" else "for=192.0.2.1"
            answer = live.get("/v2/health/live", headers={header: value})
            assert answer.status_code == 403
    for live in _serve(home, signer, trained_model.onnx, network_allow=("127.0.0.0/8",)):
        key = Actors(live).service("spoofer", Role.PREDICTOR)
        headers = {**bearer(key), "x-forwarded-for": "10.0.0.1", "forwarded": "for=10.0.0.1"}
        assert live.post(INFER, json=BODY, headers=headers).status_code == 200
        records = live.parts.audit_service().query(
            AuditQuery(action="model.predict", principal="svc:spoofer"),
            AuditReader(principal="test", request_id="t"),
        )
        assert records[-1]["client_address"] == "127.0.0.1"
        assert "peer" not in records[-1]["details"]


def test_bad_network_settings_stop_the_start(tmp_path: Path, home: Path) -> None:
    from strongroom.bootstrap.guard import build_network
    from strongroom.config import load_settings
    from strongroom.errors import ConfigurationError

    for bad in (("10.0.0.1/8",), ("::ffff:10.0.0.0/104",), ("not-a-network",)):
        with pytest.raises(ConfigurationError):
            build_network(load_settings(home=home, network_deny=bad))
