"""The live configuration check's result, and which setting an error points at.

:meth:`core.hunyuan.client.HunyuanClient.check` makes the cheapest real calls and reports a
:class:`CheckResult`; :func:`diagnose` turns the error of a failed call into the problem and
the :class:`~core.config.HunyuanConfig` fields an operator should look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.errors import (
    AuthError,
    HunyuanError,
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

__all__ = ["CheckProblem", "CheckResult", "diagnose"]

CheckProblem = Literal[
    "key", "account", "clock", "url", "region", "model", "credit", "busy", "request", "service"
]
"""What a failed check blames (see :class:`CheckResult`)."""

# Codes of an account that exists but may not use the service (not a wrong key).
_ACCOUNT_CODES = frozenset(
    {
        "FailedOperation.ServiceNotActivated",
        "ResourceUnavailable.NotExist",
        "FailedOperation.UserUnAuthError",
        "FailedOperation.PartnerAccountUnSupport",
    }
)
_REGION_CODES = frozenset({"UnsupportedRegion", "InvalidRegion"})
_RETIRED_CODES = frozenset({"ActionOffline", "InvalidAction"})
# Codes that name the model as what is missing (reference §4.3, §7).
_MODEL_CODES = frozenset({"model_not_found", "ResourceNotFound"})
_MODEL_CODE_PREFIXES = ("InvalidParameterValue.Model", "ResourceNotFound.")


def _names_model(err: HunyuanError) -> bool:
    """Whether the service's message is about the model (used only to classify, never shown)."""
    return "model" in str(err).lower()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a live check found. Never contains a secret.

    ``ok``: every call succeeded. ``problem`` is ``None`` when ok, else the first failure:

    - ``"key"``: credentials refused or missing (API key; SecretId/SecretKey);
    - ``"account"``: the credentials are valid but the account may not use the service
      (not activated, not verified);
    - ``"clock"``: the signature expired: this machine's clock is off by minutes (native);
    - ``"url"``: nothing usable answered at the configured address (connection refused, DNS,
      timeout, HTTP 404/405, or an answer that is not the API's);
    - ``"region"``: the service refused the configured region (native);
    - ``"model"``: the model is unknown, retired or not available to this key;
    - ``"credit"``: the account has no credit left;
    - ``"busy"``: rate-limited or busy: the settings may be fine, try again later;
    - ``"request"``: the service refused the request itself (e.g. a bad ``extra_body`` entry);
    - ``"service"``: the service failed (5xx) or reported the API retired / an unknown error.

    ``settings`` names the :class:`~core.config.HunyuanConfig` fields to look at (empty when ok
    or when no setting is to blame). ``detail`` is one plain English sentence for the operator
    (names the failing call and the service's code; no upstream text is quoted, no secret).
    ``verified`` lists what the calls that succeeded proved, in order, from ``"url"``,
    ``"key"``, ``"clock"``, ``"region"``, ``"model"``. ``api``, ``endpoint``, ``model`` and
    ``region`` say what was checked (``region`` is ``""`` when no native call was made).
    ``code``/``status``/``request_id`` come from the error, for logs.
    """

    ok: bool
    problem: CheckProblem | None
    detail: str
    api: str
    endpoint: str
    model: str
    region: str = ""
    settings: tuple[str, ...] = ()
    verified: tuple[str, ...] = ()
    code: str = ""
    status: int | None = None
    request_id: str | None = None


def diagnose(
    err: HunyuanError, *, native: bool, address: str
) -> tuple[CheckProblem, tuple[str, ...], str]:
    """``(problem, settings, reason)`` for an error of a check call.

    ``native`` says whether the call was TC3-signed (which credentials and address fields
    apply); ``address`` is the configuration field holding the URL that was called.
    """
    keys = ("secret_id", "secret_key") if native else ("api_key",)
    code = err.code
    if isinstance(err, SignatureExpired):
        return "clock", (), "the request signature was refused as expired (check NTP)"
    if code in _REGION_CODES or code.endswith(".Region"):
        return "region", ("region",), "the service does not serve the configured region"
    if isinstance(err, AuthError):
        if code in _ACCOUNT_CODES:
            return "account", (), "the account may not use this service yet (activate it)"
        return "key", keys, "the credentials were refused or are missing"
    if code in _RETIRED_CODES:
        return "service", (address,), "the service says this API is offline or unknown"
    if isinstance(err, ModelUnavailable):
        if code in _MODEL_CODES or code.startswith(_MODEL_CODE_PREFIXES) or _names_model(err):
            return "model", ("model",), "the model is unknown or not available to this key"
        # A bare 404 (or a gateway's generic "not found"): the path itself does not exist.
        return "url", (address,), "the address answered 'not found' (wrong URL or path)"
    if isinstance(err, TransportError):  # includes HunyuanTimeout
        return "url", (address,), "the service could not be reached at the configured address"
    if isinstance(err, OutOfCredit):
        return "credit", (), "the account has run out of credit"
    if isinstance(err, RateLimited | ServerBusy):
        return "busy", (), "the service is rate-limiting or busy; try again later"
    if err.status in (405, 406):
        return "url", (address,), "the address does not take this API's requests"
    if isinstance(err, InvalidRequest) and _names_model(err):
        return "model", ("model",), "the service refused the request naming the model"
    if isinstance(err, InvalidRequest | ModerationRefused):
        return "request", ("extra_body",), "the service refused the request itself"
    if isinstance(err, UpstreamError) and (err.status is None or err.status < 500):
        return "url", (address,), "the address answered, but not as this API does"
    return "service", (), "the service failed or gave an unknown error"
