"""Access to Tencent Hunyuan: the async client and TC3-HMAC-SHA256 signing.

:class:`HunyuanClient` speaks the OpenAI-compatible API (TokenHub / legacy) or the native
API 3.0 for chat, and TokenHub or native jobs for images; every failure surfaces as one
:mod:`core.errors` type. :meth:`HunyuanClient.check` is the live configuration check; it
reports a :class:`CheckResult`. :func:`sign_tc3` / :func:`verify_tc3` are the pure signer and
verifier (the emulator verifies with the latter). The emulator lives in
:mod:`core.hunyuan.emulator` and is not imported here.
"""

from core.hunyuan.client import (
    CheckProblem,
    CheckResult,
    HunyuanClient,
    SleepFn,
    StatusCallback,
)
from core.hunyuan.signing import (
    TC3Failure,
    TC3Signature,
    TC3Verification,
    sign_tc3,
    verify_tc3,
)

__all__ = [
    "CheckProblem",
    "CheckResult",
    "HunyuanClient",
    "SleepFn",
    "StatusCallback",
    "TC3Failure",
    "TC3Signature",
    "TC3Verification",
    "sign_tc3",
    "verify_tc3",
]
