"""An offline Hunyuan: an aiohttp server speaking both wire formats faithfully.

Who uses it: the test suites (the official ``openai`` and ``tencentcloud-sdk-python-hunyuan``
clients and hybot's own client run against it over loopback), ``hybot demo`` and
``hybot emulator``. It is never a silent fallback in production.

What it guarantees (details in the docstrings of its modules):

- **OpenAI-compatible API** under ``/v1``: ``POST /v1/chat/completions`` (Bearer key,
  reference §4); TokenHub images ``POST /v1/wand/hunyuan-image/v3-generation`` and
  ``POST /v1/api/image/lite``; result files at ``GET /files/<name>`` (403 once expired:
  12 h of emulator time for TokenHub, 1 h for native results).
- **Native API 3.0** at ``POST /`` routed on ``X-TC-Action`` with TC3 verification (reference
  §2-§6): ChatCompletions, GetTokenCount, SubmitHunyuanImageJob, QueryHunyuanImageJob,
  TextToImageLite.
- **Deterministic replies** quoting the request:
  ``Turn N. You first said: "…". You just said: "…". System: "…".`` (``[[long=N]]`` pads to
  about N tokens); usage from :func:`core.tokens.estimate_tokens`.
- **Limits**: ``chat_concurrency`` chats in flight per account (excess → busy error at once);
  ``image_concurrency`` running image jobs/calls per account (excess waits, FIFO); prompts
  longer than the model's context window are refused (``context_length_exceeded`` /
  ``InvalidParameter``), and so are bodies over ``max_body_bytes`` (413).
- **Faults**: ``[[fault:NAME]]`` / ``[[fault:NAME=VALUE]]`` in the latest user message (chat)
  or the prompt (images) for one request, or ``EmulatorConfig.faults`` for all of them:
  ``latency=S``, ``429``, ``500``, ``busy``, ``hang``, ``disconnect``, ``moderation``,
  ``sensitive``, ``credit``, ``badkey``, ``stream_error``, ``imagefail``. Server-wide faults
  also apply to GetTokenCount/QueryHunyuanImageJob (``latency``, ``hang``, ``badkey``, ``429``,
  ``500``, ``disconnect``). For non-stream chats ``stream_error`` answers like an engine
  timeout (OpenAI 504 ``upstream_error``/``4001``; native
  ``FailedOperation.EngineRequestTimeout``).
- Secrets it was configured with never appear in its logs, reprs, stats or error messages.

Emulator extensions beyond the real services: TokenHub image bodies may carry
``output_format: "jpeg"``; hy-image-lite base64 results come back as ``data[0].b64_json``.

Modules: :mod:`.app` (the aiohttp application and :class:`Emulator`), one per interface
(:mod:`.openai_compat` chat, :mod:`.native` API 3.0, :mod:`.images` TokenHub images and result
files), :mod:`.chat` (the chat engine both chat interfaces share), :mod:`.wire` (JSON in, JSON
and error shapes out), :mod:`.state` (config, stats, shared state), :mod:`.text` (markers,
role rules, replies), :mod:`.faults` (the fault tables), :mod:`.render` (Pillow images, file
store, run slots), :mod:`.gate` (the test hook that holds image runs and chats step by step:
``EmulatorConfig(hold_image_runs=True, hold_chats=True)``, ``Emulator.image_gate`` and
``Emulator.chat_gate``). Nothing outside this package imports its private modules, and
importing :mod:`core.conversation` or :mod:`core.hunyuan.client` loads none of it (nor
aiohttp).
"""

from core.hunyuan.emulator.app import Emulator, app_stats, make_app
from core.hunyuan.emulator.state import EmulatorConfig, EmulatorStats, ImageRecord

__all__ = ["Emulator", "EmulatorConfig", "EmulatorStats", "ImageRecord", "app_stats", "make_app"]
