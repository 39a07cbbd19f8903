"""TC3-HMAC-SHA256 request signing and verification for Tencent Cloud API 3.0.

Two pure functions (no I/O, no clock reads, no environment):

- :func:`sign_tc3` is called by :class:`core.hunyuan.client.HunyuanClient` for every native
  request. It returns a :class:`TC3Signature` whose ``authorization`` is the header value; the
  other fields expose each intermediate step so tests can compare them with the reference
  vectors (reference ``hunyuan-api.md`` §2.3).
- :func:`verify_tc3` is called by the emulator for every native request. It parses the
  ``Authorization`` header, rebuilds the canonical request *from the headers named in
  SignedHeaders* and the raw body bytes, and compares signatures in constant time. It returns a
  :class:`TC3Verification` naming the failure (:class:`TC3Failure`) instead of raising.

Canonical header values are trimmed and lower-cased, as in Tencent's signature-v3 guide
(``x-tc-action:gettokencount``). The Python SDK only signs ``content-type`` and ``host``, whose
values are lower-case in practice, so both styles produce identical canonical requests; the
verifier additionally accepts the as-sent (not lower-cased) form for clients that skip that step.

Unsigned-payload mode (reference §2.1): with ``X-TC-Content-SHA256: UNSIGNED-PAYLOAD`` the payload
hash is that of the literal string ``UNSIGNED-PAYLOAD``, so the body is not covered.

Secrets: the secret key only ever enters :func:`derive_signing_key`; no returned object holds
it or any key derived from it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "ALGORITHM",
    "ParsedAuthorization",
    "TC3Failure",
    "TC3Signature",
    "TC3Verification",
    "canonical_request",
    "derive_signing_key",
    "parse_authorization",
    "sign_tc3",
    "tc3_date",
    "verify_tc3",
]

ALGORITHM = "TC3-HMAC-SHA256"
_TERMINATOR = "tc3_request"
_MANDATORY = ("content-type", "host")
_UNSIGNED = "UNSIGNED-PAYLOAD"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEADER_NAME = re.compile(r"^[a-z0-9-]+$")


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def tc3_date(timestamp: int) -> str:
    """The UTC calendar date (``YYYY-MM-DD``) of a Unix ``timestamp``, as used in the scope."""
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d")


def derive_signing_key(secret_key: str, date: str, service: str) -> tuple[bytes, bytes, bytes]:
    """The TC3 key chain ``(kDate, kService, kSigning)`` for ``date`` and ``service``.

    ``kDate = HMAC("TC3" + SecretKey, date)``, ``kService = HMAC(kDate, service)``,
    ``kSigning = HMAC(kService, "tc3_request")``. Callers must not log the result.
    """
    k_date = _hmac(("TC3" + secret_key).encode("utf-8"), date)
    k_service = _hmac(k_date, service)
    k_signing = _hmac(k_service, _TERMINATOR)
    return k_date, k_service, k_signing


def canonical_request(
    *,
    method: str,
    canonical_uri: str,
    canonical_query: str,
    headers: Sequence[tuple[str, str]],
    hashed_payload: str,
) -> tuple[str, str]:
    """Build ``(CanonicalRequest, SignedHeaders)`` from already-canonical ``(name, value)`` pairs.

    ``headers`` must hold lower-case names and canonical values, in the order they are to be
    signed (callers sort them). The canonical-headers block ends in ``\\n``, so the request
    contains an empty line before SignedHeaders, exactly as Tencent specifies.
    """
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in headers)
    signed_headers = ";".join(name for name, _ in headers)
    request = "\n".join(
        (
            method.upper(),
            canonical_uri,
            canonical_query,
            canonical_headers,
            signed_headers,
            hashed_payload,
        )
    )
    return request, signed_headers


@dataclass(frozen=True, slots=True)
class TC3Signature:
    """Every intermediate value of one signature (none of them is secret).

    ``authorization`` is the complete ``Authorization`` header value.
    """

    authorization: str
    timestamp: int
    date: str
    credential_scope: str
    signed_headers: str
    hashed_payload: str
    canonical_request: str
    canonical_request_hash: str
    string_to_sign: str
    signature: str


def _string_to_sign(timestamp: int, scope: str, canonical_hash: str) -> str:
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{canonical_hash}"


def sign_tc3(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    timestamp: int,
    content_type: str,
    body: bytes,
    extra_headers: Mapping[str, str] | None = None,
    method: str = "POST",
    canonical_uri: str = "/",
    canonical_query: str = "",
    unsigned_payload: bool = False,
) -> TC3Signature:
    """Sign one request (pure; the caller supplies the timestamp).

    Signs ``content-type`` and ``host`` plus every header in ``extra_headers`` (e.g.
    ``{"X-TC-Action": "ChatCompletions"}``). Names are lower-cased and sorted; values trimmed and
    lower-cased in the canonical form only, the caller sends them as it likes. ``body`` must be
    the exact bytes that will be sent. ``host`` must equal the ``Host`` header that will be sent
    (including ``:port`` when it is not the scheme's default). With ``unsigned_payload`` the
    payload hash is that of ``UNSIGNED-PAYLOAD`` and ``body`` is ignored; the caller must then
    send ``X-TC-Content-SHA256: UNSIGNED-PAYLOAD``.
    """
    pairs: dict[str, str] = {"content-type": content_type, "host": host}
    for name, value in (extra_headers or {}).items():
        pairs[name.strip().lower()] = value
    headers = sorted((name, value.strip().lower()) for name, value in pairs.items())
    hashed_payload = _sha256_hex(_UNSIGNED.encode("ascii") if unsigned_payload else body)
    request, signed_headers = canonical_request(
        method=method,
        canonical_uri=canonical_uri,
        canonical_query=canonical_query,
        headers=headers,
        hashed_payload=hashed_payload,
    )
    request_hash = _sha256_hex(request.encode("utf-8"))
    date = tc3_date(timestamp)
    scope = f"{date}/{service}/{_TERMINATOR}"
    to_sign = _string_to_sign(timestamp, scope, request_hash)
    _, _, k_signing = derive_signing_key(secret_key, date, service)
    signature = hmac.new(k_signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return TC3Signature(
        authorization=authorization,
        timestamp=timestamp,
        date=date,
        credential_scope=scope,
        signed_headers=signed_headers,
        hashed_payload=hashed_payload,
        canonical_request=request,
        canonical_request_hash=request_hash,
        string_to_sign=to_sign,
        signature=signature,
    )


# --- verification -------------------------------------------------------------------------


class TC3Failure(enum.Enum):
    """Why a request failed verification; values match Tencent's ``AuthFailure.*`` codes."""

    MALFORMED = "AuthFailure.InvalidAuthorization"
    UNKNOWN_ID = "AuthFailure.SecretIdNotFound"
    MISMATCH = "AuthFailure.SignatureFailure"
    EXPIRED = "AuthFailure.SignatureExpire"

    @property
    def code(self) -> str:
        """The Tencent error code an emulator should answer with."""
        return self.value


@dataclass(frozen=True, slots=True)
class ParsedAuthorization:
    """The parts of a TC3 ``Authorization`` header."""

    secret_id: str
    date: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """Parse a TC3 ``Authorization`` header; ``None`` if it is malformed in any way.

    Requires the ``TC3-HMAC-SHA256`` algorithm, a four-part Credential ending in
    ``tc3_request``, non-empty lower-case SignedHeaders and a 64-hex-digit Signature.
    """
    algorithm, sep, rest = value.strip().partition(" ")
    if not sep or algorithm != ALGORITHM:
        return None
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, val = part.strip().partition("=")
        if not eq or key in fields:
            return None
        fields[key] = val.strip()
    if set(fields) != {"Credential", "SignedHeaders", "Signature"}:
        return None
    scope = fields["Credential"].split("/")
    if len(scope) != 4 or scope[3] != _TERMINATOR or not all(scope[:3]):
        return None
    secret_id, date, service = scope[0], scope[1], scope[2]
    signed = tuple(fields["SignedHeaders"].split(";"))
    if not all(_HEADER_NAME.match(name) for name in signed) or len(set(signed)) != len(signed):
        return None
    signature = fields["Signature"]
    if not _HEX64.match(signature):
        return None
    return ParsedAuthorization(
        secret_id=secret_id,
        date=date,
        service=service,
        signed_headers=signed,
        signature=signature,
    )


@dataclass(frozen=True, slots=True)
class TC3Verification:
    """Outcome of :func:`verify_tc3`. Truthy only when the request is authentic.

    ``failure`` is ``None`` on success. ``secret_id`` is the claimed SecretId (``""`` when the
    header could not be parsed); it identifies the account, it is not a secret. ``detail`` is a
    short English reason safe to return to the caller (it never contains key material).
    """

    failure: TC3Failure | None
    secret_id: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def __bool__(self) -> bool:
        return self.failure is None


def verify_tc3(
    *,
    authorization: str | None,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str] | Callable[[str], str | None],
    now: float,
    window: float = 300.0,
    method: str = "POST",
    canonical_uri: str = "/",
    canonical_query: str = "",
    expected_service: str | None = None,
) -> TC3Verification:
    """Verify one signed request (pure; the caller supplies ``now`` in Unix seconds).

    ``headers`` are the request's headers (any case-insensitive or plain mapping; names are
    matched case-insensitively); ``X-TC-Timestamp`` must be among them. ``body`` must be the raw
    bytes received, never a re-serialisation; it is not hashed when the request carries
    ``X-TC-Content-SHA256: UNSIGNED-PAYLOAD`` (whether or not it is signed). ``secrets`` maps
    a SecretId to its SecretKey (a mapping or a lookup function returning ``None`` for unknown
    ids).

    Checks, in order: parseable header, timestamp and every signed header present, and
    ``content-type``/``host`` signed (else MALFORMED); known SecretId (else UNKNOWN_ID);
    ``|now - timestamp| <= window`` (else EXPIRED); the scope's date and service agree with the
    timestamp and ``expected_service``, and the signature matches (else MISMATCH). Signatures
    are compared with :func:`hmac.compare_digest`.
    """
    if not authorization:
        return TC3Verification(TC3Failure.MALFORMED, detail="missing Authorization header")
    parsed = parse_authorization(authorization)
    if parsed is None:
        return TC3Verification(TC3Failure.MALFORMED, detail="malformed Authorization header")
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        lowered[name.lower()] = value
    raw_timestamp = lowered.get("x-tc-timestamp", "").strip()
    if not raw_timestamp.isdigit():
        return TC3Verification(
            TC3Failure.MALFORMED, parsed.secret_id, "missing or invalid X-TC-Timestamp"
        )
    timestamp = int(raw_timestamp)
    if any(name not in parsed.signed_headers for name in _MANDATORY):
        return TC3Verification(
            TC3Failure.MALFORMED, parsed.secret_id, "content-type and host must be signed"
        )
    if any(name not in lowered for name in parsed.signed_headers):
        return TC3Verification(
            TC3Failure.MALFORMED, parsed.secret_id, "a signed header is missing from the request"
        )
    secret_key = secrets(parsed.secret_id) if callable(secrets) else secrets.get(parsed.secret_id)
    if secret_key is None:
        return TC3Verification(TC3Failure.UNKNOWN_ID, parsed.secret_id, "unknown SecretId")
    if abs(now - timestamp) > window:
        return TC3Verification(
            TC3Failure.EXPIRED, parsed.secret_id, "request timestamp outside the allowed window"
        )
    date = tc3_date(timestamp)
    if parsed.date != date or (expected_service is not None and parsed.service != expected_service):
        return TC3Verification(
            TC3Failure.MISMATCH, parsed.secret_id, "credential scope does not match the request"
        )
    scope = f"{date}/{parsed.service}/{_TERMINATOR}"
    _, _, k_signing = derive_signing_key(secret_key, date, parsed.service)
    unsigned = lowered.get("x-tc-content-sha256", "").strip().upper() == _UNSIGNED
    hashed_payload = _sha256_hex(_UNSIGNED.encode("ascii") if unsigned else body)
    # Lower-cased values (Tencent's guide) first, then as-sent values (the SDK's own style).
    for fold in (True, False):
        pairs = [
            (name, lowered[name].strip().lower() if fold else lowered[name].strip())
            for name in parsed.signed_headers
        ]
        request, _ = canonical_request(
            method=method,
            canonical_uri=canonical_uri,
            canonical_query=canonical_query,
            headers=pairs,
            hashed_payload=hashed_payload,
        )
        to_sign = _string_to_sign(timestamp, scope, _sha256_hex(request.encode("utf-8")))
        expected = hmac.new(k_signing, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, parsed.signature):
            return TC3Verification(None, parsed.secret_id)
    return TC3Verification(TC3Failure.MISMATCH, parsed.secret_id, "signature does not match")
