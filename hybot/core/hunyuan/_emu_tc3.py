"""TC3-HMAC-SHA256 for the emulator: verify what a client sent (and sign, for tests).

Written to reference §2.2 step by step. The emulator's native API calls :func:`verify_tc3` with
the raw request; tests use :func:`sign_tc3` to forge, expire or tamper with requests. Helper A's
``signing.py`` implements the same algorithm for the client; the two are kept independent on
purpose (each checks the other through the reference test vectors) and may be deduplicated later.

Contract of :func:`verify_tc3`: it never raises on hostile input; it returns ``None`` when the
request is authentic, otherwise a :class:`Tc3Failure` carrying the Tencent error code to return.
It never puts the secret key, or anything derived from it, into the failure message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "ALGORITHM",
    "Tc3Failure",
    "canonical_request",
    "sign_tc3",
    "signing_key",
    "verify_tc3",
]

ALGORITHM = "TC3-HMAC-SHA256"
_UNSIGNED = "UNSIGNED-PAYLOAD"

# Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=a;b, Signature=<64 hex>
_AUTH_RE = re.compile(
    r"^TC3-HMAC-SHA256\s+Credential=(?P<id>[^/\s,]+)/(?P<date>\d{4}-\d{2}-\d{2})/"
    r"(?P<service>[^/\s,]+)/tc3_request\s*,\s*SignedHeaders=(?P<signed>[A-Za-z0-9\-;]+)"
    r"\s*,\s*Signature=(?P<sig>[0-9a-fA-F]{64})\s*$"
)


@dataclass(frozen=True, slots=True)
class Tc3Failure:
    """Why a request failed TC3 verification: the Tencent ``code`` and a safe ``message``."""

    code: str
    message: str
    secret_id: str = ""


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    """``kSigning`` of the key chain (reference §2.2 step 7)."""
    k_date = _hmac(("TC3" + secret_key).encode("utf-8"), date)
    k_service = _hmac(k_date, service)
    return _hmac(k_service, "tc3_request")


def canonical_request(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    """The canonical request (steps 2-5). ``headers`` must be keyed by lowercase name.

    Header values are trimmed and lowercased, as Tencent's signature guide prescribes (the SDK's
    own values are already lowercase, so this matches both test vectors of reference §2.3).
    """
    if headers.get("x-tc-content-sha256", "").strip().upper() == _UNSIGNED:
        payload_hash = hashlib.sha256(_UNSIGNED.encode()).hexdigest()
    else:
        payload_hash = hashlib.sha256(body).hexdigest()
    names = sorted(h.lower() for h in signed_headers)
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip().lower()}\n" for n in names)
    return "\n".join(
        (method.upper(), path or "/", query, canonical_headers, ";".join(names), payload_hash)
    )


def _string_to_sign(canonical: str, timestamp: int, date: str, service: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{digest}"


def _utc_date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


def sign_tc3(
    *,
    secret_id: str,
    secret_key: str,
    timestamp: int,
    headers: Mapping[str, str],
    body: bytes,
    signed_headers: Sequence[str] = ("content-type", "host"),
    service: str = "hunyuan",
    method: str = "POST",
    path: str = "/",
    query: str = "",
) -> str:
    """Return the ``Authorization`` header value for a request (used by tests).

    ``headers`` may use any case; only those named in ``signed_headers`` are signed.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    names = sorted(h.lower() for h in signed_headers)
    date = _utc_date(timestamp)
    canonical = canonical_request(
        method=method, path=path, query=query, headers=lower, signed_headers=names, body=body
    )
    sts = _string_to_sign(canonical, timestamp, date, service)
    signature = hmac.new(
        signing_key(secret_key, date, service), sts.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return (
        f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )


def verify_tc3(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: float,
    window: int = 300,
    service: str = "hunyuan",
) -> Tc3Failure | None:
    """Check a request's TC3 signature; ``None`` means authentic.

    ``headers`` may use any case. ``lookup_secret`` maps a SecretId to its SecretKey, or ``None``
    when unknown. Checks, in order: well-formed header and timestamp
    (``AuthFailure.InvalidAuthorization``), timestamp within ``window`` seconds of ``now``
    (``AuthFailure.SignatureExpire``), known SecretId (``AuthFailure.SecretIdNotFound``), scope
    and signature (``AuthFailure.SignatureFailure``; compared in constant time).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    match = _AUTH_RE.match(lower.get("authorization", "").strip())
    if match is None:
        return Tc3Failure("AuthFailure.InvalidAuthorization", "Authorization 头部格式不合法。")
    signed = [h for h in match["signed"].lower().split(";") if h]
    if "content-type" not in signed or "host" not in signed:
        return Tc3Failure(
            "AuthFailure.InvalidAuthorization", "SignedHeaders 必须包含 content-type 和 host。"
        )
    missing = [h for h in signed if h not in lower]
    if missing:
        return Tc3Failure(
            "AuthFailure.InvalidAuthorization", f"签名头部缺失：{', '.join(sorted(missing))}。"
        )
    raw_ts = lower.get("x-tc-timestamp", "").strip()
    if not raw_ts.isdigit():
        return Tc3Failure("AuthFailure.InvalidAuthorization", "X-TC-Timestamp 缺失或不合法。")
    timestamp = int(raw_ts)
    if abs(now - timestamp) > window:
        return Tc3Failure(
            "AuthFailure.SignatureExpire",
            f"签名过期。Timestamp 与服务器时间相差超过 {window} 秒。",
        )
    secret_id = match["id"]
    secret_key = lookup_secret(secret_id)
    if secret_key is None:
        return Tc3Failure("AuthFailure.SecretIdNotFound", "SecretId 不存在，请输入正确的密钥。")
    date = match["date"]
    if date != _utc_date(timestamp) or match["service"] != service:
        return Tc3Failure(
            "AuthFailure.SignatureFailure", "请求签名验证失败：凭证范围不匹配。", secret_id
        )
    canonical = canonical_request(
        method=method, path=path, query=query, headers=lower, signed_headers=signed, body=body
    )
    sts = _string_to_sign(canonical, timestamp, date, service)
    expected = hmac.new(
        signing_key(secret_key, date, service), sts.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, match["sig"].lower()):
        return Tc3Failure(
            "AuthFailure.SignatureFailure",
            "请求签名验证失败，请检查您的签名计算是否正确。",
            secret_id,
        )
    return None
