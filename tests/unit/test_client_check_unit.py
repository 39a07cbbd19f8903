"""The live check's diagnosis table: which setting each kind of failure blames."""

from __future__ import annotations

import pytest

from core.errors import (
    AuthError,
    HunyuanError,
    HunyuanTimeout,
    InvalidRequest,
    ModelUnavailable,
    ModerationRefused,
    OutOfCredit,
    RateLimited,
    ServerBusy,
    SignatureExpired,
    TransportError,
    UpstreamError,
)
from core.hunyuan._check import diagnose


@pytest.mark.parametrize(
    ("err", "problem", "settings"),
    [
        (
            AuthError("upstream text", code="AuthFailure.SecretIdNotFound"),
            "key",
            ("secret_id", "secret_key"),
        ),
        (AuthError("upstream text", code="FailedOperation.ServiceNotActivated"), "account", ()),
        (SignatureExpired("upstream text", code="AuthFailure.SignatureExpire"), "clock", ()),
        (HunyuanError("upstream text", code="UnsupportedRegion"), "region", ("region",)),
        (
            InvalidRequest("upstream text", code="InvalidParameterValue.Region"),
            "region",
            ("region",),
        ),
        (
            ModelUnavailable("upstream text", code="InvalidParameterValue.Model"),
            "model",
            ("model",),
        ),
        (ModelUnavailable("upstream text", code="ActionOffline"), "service", ("native_endpoint",)),
        (ModelUnavailable("upstream text", code="model_not_found"), "model", ("model",)),
        (ModelUnavailable("upstream text", code="ResourceNotFound"), "model", ("model",)),
        (
            ModelUnavailable("not_found: Invalid URL", code="not_found", status=404),
            "url",
            ("native_endpoint",),
        ),
        (ModelUnavailable("HTTP 404", status=404), "url", ("native_endpoint",)),
        (TransportError("upstream text", code="not_sent"), "url", ("native_endpoint",)),
        (HunyuanTimeout("x"), "url", ("native_endpoint",)),
        (OutOfCredit("upstream text", code="FailedOperation.ResourcePackExhausted"), "credit", ()),
        (RateLimited("upstream text", code="RequestLimitExceeded"), "busy", ()),
        (ServerBusy("upstream text", code="FailedOperation.EngineServerLimitExceeded"), "busy", ()),
        (InvalidRequest("HTTP 405", status=405), "url", ("native_endpoint",)),
        (
            InvalidRequest("UnknownParameter: Foo", code="UnknownParameter"),
            "request",
            ("extra_body",),
        ),
        (
            InvalidRequest("400001: upstream text: model is required", code="400001"),
            "model",
            ("model",),
        ),
        (
            ModerationRefused("upstream text", code="OperationDenied.TextIllegalDetected"),
            "request",
            ("extra_body",),
        ),
        (
            UpstreamError("chat answer is not a JSON object", status=200),
            "url",
            ("native_endpoint",),
        ),
        (UpstreamError("HTTP 503", status=503), "service", ()),
        (HunyuanError("upstream text", code="SomethingNew"), "service", ()),
    ],
)
def test_diagnose_blames_the_right_setting(
    err: HunyuanError, problem: str, settings: tuple[str, ...]
) -> None:
    got, got_settings, reason = diagnose(err, native=True, address="native_endpoint")
    assert (got, got_settings) == (problem, settings)
    assert reason and "upstream text" not in reason  # no upstream text quoted


def test_openai_credentials_name_the_api_key() -> None:
    got = diagnose(AuthError("HTTP 401", status=401), native=False, address="base_url")
    assert got[:2] == ("key", ("api_key",))
