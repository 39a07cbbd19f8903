"""TC3-HMAC-SHA256: the reference vectors (hunyuan-api.md §2.3) and the verifier's verdicts."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tencentcloud.common.sign import Sign

from core.hunyuan import signing
from core.hunyuan.signing import (
    TC3Failure,
    derive_signing_key,
    parse_authorization,
    sign_tc3,
    tc3_date,
    verify_tc3,
)

SECRET_ID = "AKIDEXAMPLEsecretid0000000000000000"
SECRET_KEY = "EXAMPLEsecretkey00000000000000000"
TS = 1735689600
HOST = "hunyuan.tencentcloudapi.com"


def vector1_body() -> bytes:
    # The SDK serialises with json.dumps defaults: ", "/": " separators and \u escapes.
    return json.dumps(
        {"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": "你好"}]}
    ).encode()


def test_vector1_body_is_the_reference_84_bytes() -> None:
    body = vector1_body()
    assert len(body) == 84
    assert body == (
        b'{"Model": "hunyuan-lite", "Messages": [{"Role": "user", "Content": "\\u4f60\\u597d"}]}'
    )


def test_vector1_every_step() -> None:
    sig = sign_tc3(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        service="hunyuan",
        host=HOST,
        timestamp=TS,
        content_type="application/json",
        body=vector1_body(),
    )
    payload = "405e45eb625c96bdf504a038f77f1c9f2ac84c13ebb16058342f9dea920e0600"
    assert sig.hashed_payload == payload
    assert sig.canonical_request == (
        "POST\n/\n\ncontent-type:application/json\nhost:hunyuan.tencentcloudapi.com\n\n"
        f"content-type;host\n{payload}"
    )
    assert sig.canonical_request_hash == (
        "f75130582b3ed002a2b6e11e8adee8bb5e14b260f48642106fb5413419e521e4"
    )
    assert sig.string_to_sign == (
        "TC3-HMAC-SHA256\n1735689600\n2025-01-01/hunyuan/tc3_request\n"
        "f75130582b3ed002a2b6e11e8adee8bb5e14b260f48642106fb5413419e521e4"
    )
    assert sig.date == "2025-01-01"
    assert sig.signed_headers == "content-type;host"
    assert sig.signature == "bdddfe35b840c91269486670025a0440cd877a4a88d69ecb6039590f58699df0"
    assert sig.authorization == (
        "TC3-HMAC-SHA256 Credential=AKIDEXAMPLEsecretid0000000000000000/2025-01-01/hunyuan/"
        "tc3_request, SignedHeaders=content-type;host, "
        "Signature=bdddfe35b840c91269486670025a0440cd877a4a88d69ecb6039590f58699df0"
    )


def test_vector1_key_chain() -> None:
    k_date, k_service, k_signing = derive_signing_key(SECRET_KEY, "2025-01-01", "hunyuan")
    assert k_date.hex() == "9cafff9f118acb7618c4f702f45a67644af1e7a36da6bc59ad0baf345c63dbca"
    assert k_service.hex() == "2d70ba13361e226cb356473bf6397c8cabe9c7948482f8a91e06806007901725"
    assert k_signing.hex() == "541e064ab8ea3ca149545abb701fe48653ceaf06a77717e3664154d969355d80"


def test_vector2_three_signed_headers_with_lowercased_action() -> None:
    body = b'{"Prompt":"hello"}'
    sig = sign_tc3(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        service="hunyuan",
        host=HOST,
        timestamp=TS,
        content_type="application/json; charset=utf-8",
        body=body,
        extra_headers={"X-TC-Action": "GetTokenCount"},
    )
    assert sig.hashed_payload == "aafb986d6936352d0923c21af12fcc2bc7cfbb620038bd7a8312e390df1f0738"
    assert sig.signed_headers == "content-type;host;x-tc-action"
    assert "x-tc-action:gettokencount\n" in sig.canonical_request
    assert sig.canonical_request_hash == (
        "9b9299289c58026e69e65dd9811388dfb2a31b72766fd7dc758ab3af35f4d872"
    )
    assert sig.signature == "bcf1c607e1994e6ef5ea99499f4b15b711fc81bc6315ad12fe8af71e24220528"


def test_signature_object_holds_no_secret() -> None:
    sig = sign_tc3(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        service="hunyuan",
        host=HOST,
        timestamp=TS,
        content_type="application/json",
        body=b"{}",
    )
    assert SECRET_KEY not in repr(sig)
    for k in derive_signing_key(SECRET_KEY, sig.date, "hunyuan"):
        assert k.hex() not in repr(sig)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=200),
    ts=st.integers(min_value=0, max_value=4_000_000_000),
    key=st.text(min_size=1, max_size=40),
    action=st.sampled_from(["ChatCompletions", "GetTokenCount", "SubmitHunyuanImageJob"]),
)
def test_signature_agrees_with_the_sdk_key_chain(
    body: bytes, ts: int, key: str, action: str
) -> None:
    sig = sign_tc3(
        secret_id="AKIDx",
        secret_key=key,
        service="hunyuan",
        host=HOST,
        timestamp=ts,
        content_type="application/json",
        body=body,
        extra_headers={"X-TC-Action": action},
    )
    assert sig.hashed_payload == hashlib.sha256(body).hexdigest()
    assert sig.signature == Sign.sign_tc3(key, tc3_date(ts), "hunyuan", sig.string_to_sign)
    # And the verifier accepts exactly what the signer produced.
    headers = {
        "Content-Type": "application/json",
        "Host": HOST,
        "X-TC-Action": action,
        "X-TC-Timestamp": str(ts),
    }
    assert verify_tc3(
        authorization=sig.authorization,
        headers=headers,
        body=body,
        secrets={"AKIDx": key},
        now=ts,
    )


# --- verifier -------------------------------------------------------------------------------


def signed_request(
    *, ts: int = TS, body: bytes = b'{"Prompt":"hello"}', action: str = "GetTokenCount"
) -> tuple[str, dict[str, str], bytes]:
    sig = sign_tc3(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        service="hunyuan",
        host="127.0.0.1:8080",
        timestamp=ts,
        content_type="application/json",
        body=body,
        extra_headers={"X-TC-Action": action},
    )
    headers = {
        "Content-Type": "application/json",
        "Host": "127.0.0.1:8080",
        "X-TC-Action": action,
        "X-TC-Timestamp": str(ts),
        "X-TC-Version": "2023-09-01",
    }
    return sig.authorization, headers, body


def check(auth: str | None, headers: dict[str, str], body: bytes, *, now: float = TS, **kw):
    return verify_tc3(
        authorization=auth,
        headers=headers,
        body=body,
        secrets={SECRET_ID: SECRET_KEY},
        now=now,
        **kw,
    )


def test_verify_accepts_a_good_request_case_insensitively() -> None:
    auth, headers, body = signed_request()
    result = check(auth, {k.lower(): v for k, v in headers.items()}, body)
    assert result.ok and bool(result)
    assert result.failure is None
    assert result.secret_id == SECRET_ID
    # A lookup function works as well as a mapping.
    result = verify_tc3(
        authorization=auth,
        headers=headers,
        body=body,
        secrets=lambda sid: SECRET_KEY if sid == SECRET_ID else None,
        now=TS,
    )
    assert result.ok


def test_verify_rejects_an_altered_body() -> None:
    auth, headers, body = signed_request()
    altered = body.replace(b"hello", b"hellp")
    result = check(auth, headers, altered)
    assert not result
    assert result.failure is TC3Failure.MISMATCH
    assert result.failure.code == "AuthFailure.SignatureFailure"


def test_verify_rejects_an_altered_signed_header() -> None:
    auth, headers, body = signed_request(action="GetTokenCount")
    headers["X-TC-Action"] = "ChatCompletions"
    assert check(auth, headers, body).failure is TC3Failure.MISMATCH
    # An unsigned header may change freely.
    auth, headers, body = signed_request()
    headers["X-TC-Version"] = "1999-01-01"
    assert check(auth, headers, body).ok


def test_verify_rejects_a_forged_signature() -> None:
    auth, headers, body = signed_request()
    head, _, sig = auth.rpartition("Signature=")
    forged = head + "Signature=" + ("0" if sig[0] != "0" else "1") + sig[1:]
    assert check(forged, headers, body).failure is TC3Failure.MISMATCH


def test_verify_rejects_a_wrong_secret_key() -> None:
    sig = sign_tc3(
        secret_id=SECRET_ID,
        secret_key="not-the-key",
        service="hunyuan",
        host="127.0.0.1:8080",
        timestamp=TS,
        content_type="application/json",
        body=b"{}",
    )
    headers = {
        "Content-Type": "application/json",
        "Host": "127.0.0.1:8080",
        "X-TC-Timestamp": str(TS),
    }
    assert check(sig.authorization, headers, b"{}").failure is TC3Failure.MISMATCH


def test_verify_window_edges() -> None:
    auth, headers, body = signed_request(ts=TS - 300)
    assert check(auth, headers, body, now=TS).ok
    auth, headers, body = signed_request(ts=TS - 301)
    result = check(auth, headers, body, now=TS)
    assert result.failure is TC3Failure.EXPIRED
    assert result.failure.code == "AuthFailure.SignatureExpire"
    auth, headers, body = signed_request(ts=TS + 301)
    assert check(auth, headers, body, now=TS).failure is TC3Failure.EXPIRED
    assert check(auth, headers, body, now=TS, window=400).ok


def test_verify_unknown_secret_id() -> None:
    auth, headers, body = signed_request()
    result = verify_tc3(
        authorization=auth, headers=headers, body=body, secrets={"AKIDother": "x"}, now=TS
    )
    assert result.failure is TC3Failure.UNKNOWN_ID
    assert result.failure.code == "AuthFailure.SecretIdNotFound"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: None,
        lambda a: "",
        lambda a: a.replace("TC3-HMAC-SHA256", "HMAC-SHA1"),
        lambda a: a.replace("/tc3_request", "/tc2_request"),
        lambda a: a.replace("/hunyuan/", "/"),
        lambda a: a.replace("Signature=", "Sig="),
        lambda a: a.rsplit(", Signature=", 1)[0],
        lambda a: a[:-1],  # 63 hex digits
        lambda a: a + "z",
        lambda a: a.replace("SignedHeaders=content-type;host;x-tc-action", "SignedHeaders="),
        lambda a: a.replace("content-type;host;x-tc-action", "Content-Type;host;x-tc-action"),
        lambda a: a + ", Signature=" + "0" * 64,
    ],
)
def test_verify_malformed_headers(mutate) -> None:
    auth, headers, body = signed_request()
    result = check(mutate(auth), headers, body)
    assert result.failure is TC3Failure.MALFORMED
    assert result.failure.code == "AuthFailure.InvalidAuthorization"


def test_verify_malformed_when_host_is_not_signed_or_timestamp_missing() -> None:
    auth, headers, body = signed_request()
    # Only content-type listed as signed: the parser accepts it, the mandatory-host rule does not.
    only_ct = auth.replace(
        "SignedHeaders=content-type;host;x-tc-action", "SignedHeaders=content-type"
    )
    assert check(only_ct, headers, body).failure is TC3Failure.MALFORMED
    no_ts = {k: v for k, v in headers.items() if k != "X-TC-Timestamp"}
    assert check(auth, no_ts, body).failure is TC3Failure.MALFORMED
    bad_ts = dict(headers, **{"X-TC-Timestamp": "12a"})
    assert check(auth, bad_ts, body).failure is TC3Failure.MALFORMED
    missing_signed = {k: v for k, v in headers.items() if k != "X-TC-Action"}
    assert check(auth, missing_signed, body).failure is TC3Failure.MALFORMED


def test_verify_scope_date_and_service_must_agree() -> None:
    auth, headers, body = signed_request()
    wrong_date = auth.replace("/2025-01-01/", "/2025-01-02/")
    assert check(wrong_date, headers, body).failure is TC3Failure.MISMATCH
    assert check(auth, headers, body, expected_service="hunyuan").ok
    assert check(auth, headers, body, expected_service="cvm").failure is TC3Failure.MISMATCH


def test_verify_accepts_sdk_style_unlowered_values() -> None:
    # A signer that keeps header values as sent (the SDK does for content-type/host).
    body = b"{}"
    ct = "application/JSON"
    payload = hashlib.sha256(body).hexdigest()
    request = f"POST\n/\n\ncontent-type:{ct}\nhost:{HOST}\n\ncontent-type;host\n{payload}"
    to_sign = (
        f"TC3-HMAC-SHA256\n{TS}\n2025-01-01/hunyuan/tc3_request\n"
        + hashlib.sha256(request.encode()).hexdigest()
    )
    signature = Sign.sign_tc3(SECRET_KEY, "2025-01-01", "hunyuan", to_sign)
    auth = (
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2025-01-01/hunyuan/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )
    headers = {"Content-Type": ct, "Host": HOST, "X-TC-Timestamp": str(TS)}
    assert check(auth, headers, body).ok


def test_verify_compares_in_constant_time(monkeypatch) -> None:
    calls = []
    real = signing.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    auth, headers, body = signed_request()
    assert check(auth, headers, body).ok
    assert calls and calls[-1][1] == parse_authorization(auth).signature


def test_parse_authorization_parts() -> None:
    auth, _, _ = signed_request()
    parsed = parse_authorization(auth)
    assert parsed is not None
    assert parsed.secret_id == SECRET_ID
    assert parsed.date == "2025-01-01"
    assert parsed.service == "hunyuan"
    assert parsed.signed_headers == ("content-type", "host", "x-tc-action")
    assert len(parsed.signature) == 64
