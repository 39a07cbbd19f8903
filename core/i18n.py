"""Every sentence the bot itself says, in English (``en``) and Simplified Chinese (``zh``).

Pure data and formatting, no I/O. Whoever produces user-visible text (the pipeline in
:mod:`core.conversation`, the handlers in :mod:`core.turns`, the command help in
:mod:`core.commands`, and the adapters for what they say themselves: image status, an
undelivered image, the console's own lines) calls :func:`t` with a key and the language picked
by :func:`resolve_language`; errors become sentences through :func:`error_message`.

Contracts:

- Both languages have exactly the same keys, and each key has the same ``{placeholders}`` in
  both (guarded by ``tests/unit/test_i18n.py``). Placeholders are bare names, so any parameter
  value is rendered with ``str()``; substituted values are never re-interpreted as templates.
- Counted things (``"1 image"``, ``"2 images"``) come from :func:`t_count`, which picks the
  ``<key>.one`` / ``<key>.other`` form; such phrases fill the placeholders of the sentences.
- :func:`t` raises ``KeyError`` for an unknown key or a missing parameter: such a bug surfaces in
  tests instead of showing a half-formatted sentence. Unknown languages fall back to English.
- Every error ``kind`` in :mod:`core.errors` has an ``error.<kind>`` key without
  parameters; :func:`error_message` adds details (limit, remaining, reset time) where the error
  carries them. No sentence echoes upstream text or secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, tzinfo
from types import MappingProxyType

from core.errors import CommandError, HybotError, ImageSizeFormat, InputTooLong, QuotaExceeded

__all__ = [
    "CATALOGUE",
    "LANGUAGES",
    "error_message",
    "format_reset",
    "limit_label",
    "normalize_language",
    "resolve_language",
    "t",
    "t_count",
]

LANGUAGES: tuple[str, ...] = ("en", "zh")

_EN: dict[str, str] = {
    # --- errors, one per kind in core.errors (parameterless) -------------------------
    "error.internal": "Something went wrong on our side. Please try again later.",
    "error.config": "The bot is misconfigured. An operator has to fix it.",
    "error.store": "The bot's storage is unavailable right now. Please try again shortly.",
    "error.access_denied": "You don't have access to this bot here. Ask an admin to grant it.",
    "error.command": "That command isn't quite right. Send /help to see how to use it.",
    "error.input_too_long": "That message is too long for the model. Please shorten it.",
    "error.quota": "You've reached your usage limit.",
    "error.busy": "The bot is busy right now. Please try again in a moment.",
    "error.model_error": "The model service failed. Please try again later.",
    "error.network": "Couldn't reach the model service. Please try again in a moment.",
    "error.timeout": "The model took too long to answer. Please try again.",
    "error.interrupted": "The answer was interrupted. Please ask again.",
    "error.rate_limited": "The model service is rate-limiting us. Please try again in a moment.",
    "error.upstream": "The model service had an internal error. Please try again.",
    "error.moderation": "I can't help with that topic. Let's talk about something else.",
    "error.out_of_credit": (
        "The bot's model account has run out of credit. An operator needs to top it up."
    ),
    "error.auth": "The bot's model service credentials are misconfigured.",
    "error.invalid_request": "The model service rejected the request. Please try rephrasing.",
    "error.model_unavailable": (
        "The configured model or endpoint is unavailable or retired. An operator must update it."
    ),
    "error.image_failed": "I couldn't generate that image.",
    # --- error details ---------------------------------------------------------------------
    "command.usage": "That command isn't quite right. Usage: {usage}",
    "unknown_command": "I don't know that command. Send {usage} to see what I can do.",
    "input_too_long.detail": (
        "That message is too long for the model (about {tokens} tokens; the limit is {limit})."
        " Please shorten it."
    ),
    # --- quota and usage -------------------------------------------------------------------
    "quota.exceeded": "Limit reached: {limit} ({remaining} left). Next reset: {resets}.",
    "quota.needed": " This message needs at least {needed}.",
    "quota.header": "Your limits:",
    "quota.status_line": ("{name}: {used} of {limit} used, {remaining} left; next reset: {resets}"),
    "quota.unlimited": "No limits apply to you.",
    "quota.unlimited_line": "{name}: unlimited",
    "quota.never": "none (ask an admin for a top-up)",
    "limit.tokens_day": "daily tokens",
    "limit.tokens_month": "monthly tokens",
    "limit.images_day": "daily images",
    "limit.images_month": "monthly images",
    "limit.rpm": "requests per minute",
    "limit.org": "shared {inner}",
    "period.day": "today",
    "period.month": "this month",
    "usage.header": "Your usage ({period}):",
    # usage.line, admin.report_line, forget.done: the counted values are t_count phrases.
    "usage.line": (
        "{answered} answered · {failed} failed (not charged) · {tokens_in}"
        " · {tokens_out} · {images} · ≈ ¥{cost}"
    ),
    "usage.none": "No usage recorded yet.",
    # --- conversation ----------------------------------------------------------------------
    "reset.done": "Done. I've started a fresh conversation; earlier messages won't be used.",
    "forget.done": "Deleted {turns} of yours.",
    "persona.set": "Persona set for this conversation.",
    "persona.cleared": "Persona cleared; back to the default.",
    "persona.show": "Current persona:\n{persona}",
    "persona.none": "No persona is set for this conversation.",
    "context.idle_reset": (
        "It's been more than {minutes} minutes since we last talked, so I started a fresh"
        " conversation."
    ),
    "retract.notice": (
        "I removed my previous answer because it may have been inappropriate."
        " Let's talk about something else."
    ),
    "stream.interrupted_suffix": "\n\n(The answer was interrupted.)",
    "note.prefix": "Note: ",
    "cancel.done": "Cancelled.",
    "cancel.nothing": "There's nothing to cancel.",
    # --- images ----------------------------------------------------------------------------
    "image.queued": "Your image is queued (position {position}).",
    "image.running": "Generating your image…",
    "image.caption": "Prompt: {prompt}\n{mark}",
    "image.mark": "AI-generated image",
    "image.not_allowed": "Image generation is turned off here.",
    "image.too_many": "Too many images are waiting right now. Please try again later.",
    # --- about, language, channels, admin -------------------------------------------------
    "about.text": (
        "hybot: a self-hosted assistant powered by Tencent Hunyuan.\n"
        "Chat model: {model}\n"
        "Image model: {image_model}\n"
        "Replies and images are generated by AI. They may be inaccurate and do not represent"
        " the operator's views.\n"
        "{registration}"
    ),
    "lang.set": "Language set to {lang}.",
    "image.bad_size": "The size {size} isn't available for {model}. Sizes: {sizes}.",
    "image.sizes_range": (
        "each side 512–2048 with width × height ≤ 1024 × 1024 (e.g. 1024x1024, 1280x768, 768x1280)"
    ),
    "lang.name_en": "English",
    "lang.name_zh": "Simplified Chinese",
    "lang.name_auto": "automatic (follow your app's language)",
    "channel.disabled": "The bot is turned off in this channel.",
    "admin.only": "Only admins can do that.",
    "admin.done": "Done: {what}",
    "admin.unknown_user": (
        "I don't know the user {user}, so nothing was changed. Mention them, or write"
        " platform:id (for example telegram:12345)."
    ),
    "admin.report_header": "Usage report ({period}):",
    "admin.report_line": (
        "{key}: {calls} · {tokens_in} in · {tokens_out} out · {images} · ≈ ¥{cost}"
    ),
    # --- help ------------------------------------------------------------------------------
    "help.header": "Here's what I can do. Message me directly or mention me to chat.",
    "help.admin_header": "Admin commands:",
    "help.ask": "Ask the model (in groups, mentioning me works too)",
    "help.image": "Generate an image; --size is WxH, --style a style name in any language",
    "help.reset": "Start a fresh conversation",
    "help.forget": "Delete the messages of yours that I have stored",
    "help.persona": "Show, set or clear this conversation's persona",
    "help.quota": "Show your limits and what's left",
    "help.usage": "Show your usage",
    "help.cancel": "Cancel your running or queued request",
    "help.help": "Show this help",
    "help.about": "About this bot and its AI-generated content",
    "help.lang": "Choose the language of my messages",
    "help.admin": "Admin tools (admins only)",
    "help.admin_grant": "Top up a user's tokens or images",
    "help.admin_limit": "Set a user's limit (none = unlimited, default = back to the default)",
    "help.admin_allow": "Allow a user to use the bot",
    "help.admin_deny": "Block a user",
    "help.admin_role": "Set a user's role",
    "help.admin_report": "Usage report for a day or a month",
    "help.admin_channel": "Set this channel's policy",
    # --- core: answer buttons -------------------------------------------------------------
    "button.regenerate": "Regenerate",
    "button.new_chat": "New chat",
    "action.stale": (
        "That button belongs to an earlier answer (a newer one exists, or the conversation was"
        " reset), so nothing was changed."
    ),
    # --- core: hardening (issue 7) -----------------------------------------------------------
    "help.image_sizes": "    Image sizes: {sizes}",
    "limit.free_images": "free images",
    "persona.too_long": (
        "That persona is too long: {chars} characters, and the limit is {limit}."
        " Nothing was changed."
    ),
    "persona.bad_chars": (
        "A persona can't contain control characters (such as NUL or terminal escape codes)."
        " Nothing was changed."
    ),
    "answer.cut_quota": (
        "\n\n(This answer was cut short: it used up what is left of your token quota.)"
    ),
    "answer.cut_model": (
        "\n\n(This answer was cut short: it reached the model's maximum answer length of"
        " {tokens} tokens. Ask me to continue.)"
    ),
    "admin.deny_admin": (
        "{user} is an admin, and admins always have access, so nothing was changed."
        " Take away the admin role first."
    ),
    "admin.channel_in_dm": (
        "Channel settings apply to groups and channels, so nothing was changed."
        " Send this command in the channel you want to change."
    ),
    # --- adapters (owner: adapter helper): the base's own sentences and the console's -------
    "error.platform": "The chat platform failed to deliver a message. Please try again.",
    "adapter.image_undelivered": "I couldn't deliver your image.",
    "console.banner": (
        "hybot demo. Type a message or /help; '@name text' speaks as another user,"
        " '& text' sends in the background, !wait waits, !quit or Ctrl-D leaves."
    ),
    "console.background": "(in the background)",
    "console.private": "(private)",
    "console.saved": "saved {path}",
    "console.withdrawn": "[previous answer withdrawn]",
    "console.internal_error": "internal error (see the log)",
    # --- store (owner: store helper) ---------------------------------------------------
    "error.store_busy": "The bot's database is busy right now. Please try again in a moment.",
    # --- durable (owner: durable helper) --------------------------------------------------
    "admin.ambiguous_user": (
        "Several users here are called {user} ({users}), so nothing was changed."
        " Write the one you mean as platform:id."
    ),
    # --- Slack adapter (owner: slack helper) ---------------------------------------------
    "slack.thinking": "is thinking…",
    "slack.working": "Working on it…",
    "slack.prompt_explain_title": "Explain",
    "slack.prompt_explain": "Explain in three sentences how photosynthesis works.",
    "slack.prompt_image_title": "Make an image",
    "slack.prompt_image": "/image a watercolor lighthouse at dawn",
    "slack.prompt_quota_title": "My quota",
    # --- telegram (owner: the Telegram adapter) ----------------------------------------------
    "telegram.start": (
        "Hi! I'm an assistant powered by Tencent Hunyuan. Write to me here, or mention me in a"
        " group. Each person has a usage quota: /quota shows yours. My answers and images are"
        " generated by AI and may be wrong."
    ),
    "telegram.privacy": (
        "For group admins: with Telegram's privacy mode on (the default), I only see messages"
        " that mention me, reply to me or start with a command. Change it with @BotFather"
        " (/setprivacy), then remove me from the group and add me again."
    ),
    # --- core: command syntax, sizes and counts (fixcore) ----------------------------------
    "image.size_format": "The size must look like 1024x1024 (width x height in pixels).",
    "image.size_rule": "Sizes for {model}: {sizes}.",
    "command.usage_only": "Usage: {usage}",
    "count.images.one": "{n} image",
    "count.images.other": "{n} images",
    "count.tokens_in.one": "{n} token in",
    "count.tokens_in.other": "{n} tokens in",
    "count.tokens_out.one": "{n} token out",
    "count.tokens_out.other": "{n} tokens out",
    "count.calls.one": "{n} call",
    "count.calls.other": "{n} calls",
    "count.stored_messages.one": "{n} stored message",
    "count.stored_messages.other": "{n} stored messages",
}

_ZH: dict[str, str] = {
    "error.internal": "我们这边出了点问题，请稍后再试。",
    "error.config": "机器人配置有误，需要管理员处理。",
    "error.store": "机器人的存储暂时不可用，请稍后再试。",
    "error.access_denied": "你在这里没有使用本机器人的权限，请联系管理员开通。",
    "error.command": "命令格式不对，发送 /help 查看用法。",
    "error.input_too_long": "这条消息太长了，模型处理不了，请精简后再发。",
    "error.quota": "你的使用额度已达上限。",
    "error.busy": "机器人正忙，请稍后再试。",
    "error.model_error": "模型服务出错了，请稍后再试。",
    "error.network": "暂时连不上模型服务，请稍后再试。",
    "error.timeout": "模型响应超时，请重试。",
    "error.interrupted": "回答中断了，请重新提问。",
    "error.rate_limited": "模型服务请求过于频繁，请稍后再试。",
    "error.upstream": "模型服务内部出错，请重试。",
    "error.moderation": "这个话题我没法回答，我们聊点别的吧。",
    "error.out_of_credit": "机器人的模型账户余额已用完，需要管理员充值。",
    "error.auth": "机器人的模型服务凭据配置有误，需要管理员处理。",
    "error.invalid_request": "模型服务拒绝了这个请求，请换个说法试试。",
    "error.model_unavailable": "所配置的模型或接口不可用或已下线，需要管理员更新配置。",
    "error.image_failed": "这张图片没能生成。",
    "command.usage": "命令格式不对。用法：{usage}",
    "unknown_command": "无法识别这个命令，发送 {usage} 查看可用命令。",
    "input_too_long.detail": (
        "这条消息太长了（约 {tokens} 个 token，上限为 {limit}），请精简后再发。"
    ),
    "quota.exceeded": "已达到额度上限：{limit}（剩余 {remaining}）。下次重置：{resets}。",
    "quota.needed": "这条消息至少需要 {needed}。",
    "quota.header": "你的额度：",
    "quota.status_line": "{name}：已用 {used} / {limit}，剩余 {remaining}，下次重置：{resets}",
    "quota.unlimited": "你的使用不受额度限制。",
    "quota.unlimited_line": "{name}：不限",
    "quota.never": "无（请联系管理员充值）",
    "limit.tokens_day": "每日 token",
    "limit.tokens_month": "每月 token",
    "limit.images_day": "每日图片",
    "limit.images_month": "每月图片",
    "limit.rpm": "每分钟请求数",
    "limit.org": "全局{inner}",
    "period.day": "今日",
    "period.month": "本月",
    "usage.header": "你的用量（{period}）：",
    "usage.line": (
        "成功 {answered} 次 · 失败 {failed} 次（未计费）· {tokens_in}"
        " · {tokens_out} · {images} · 约 ¥{cost}"
    ),
    "usage.none": "暂无用量记录。",
    "reset.done": "好的，已开启新对话，之前的消息不会再作为上下文。",
    "forget.done": "已删除你的 {turns}。",
    "persona.set": "已为本对话设置人设。",
    "persona.cleared": "已清除人设，恢复默认。",
    "persona.show": "当前人设：\n{persona}",
    "persona.none": "本对话尚未设置人设。",
    "context.idle_reset": "距离上次对话已超过 {minutes} 分钟，已为你开启新对话。",
    "retract.notice": "上一条回答可能包含不当内容，已撤回。我们聊点别的吧。",
    "stream.interrupted_suffix": "\n\n（回答中断了。）",
    "note.prefix": "注：",
    "cancel.done": "已取消。",
    "cancel.nothing": "当前没有可以取消的任务。",
    "image.queued": "图片任务已排队（第 {position} 位）。",
    "image.running": "正在生成图片…",
    "image.caption": "提示词：{prompt}\n{mark}",
    "image.mark": "图片由 AI 生成",
    "image.not_allowed": "此处未开启图片生成功能。",
    "image.too_many": "排队中的图片任务太多了，请稍后再试。",
    "about.text": (
        "hybot：基于腾讯混元的自托管助手。\n"
        "对话模型：{model}\n"
        "图片模型：{image_model}\n"
        "回复和图片均由 AI 生成，可能不准确，不代表运营者立场。\n"
        "{registration}"
    ),
    "lang.set": "语言已设置为{lang}。",
    "image.bad_size": "{model} 不支持 {size} 这个尺寸。可用尺寸：{sizes}。",
    "image.sizes_range": (
        "每边 512–2048，且宽×高不超过 1024×1024（例如 1024x1024、1280x768、768x1280）"
    ),
    "lang.name_en": "英文",
    "lang.name_zh": "简体中文",
    "lang.name_auto": "自动（跟随客户端语言）",
    "channel.disabled": "本频道已关闭机器人。",
    "admin.only": "只有管理员可以执行此操作。",
    "admin.done": "已完成：{what}",
    "admin.unknown_user": (
        "我不认识用户 {user}，所以没有做任何更改。请 @提及对方，"
        "或写成 platform:id 的形式（例如 telegram:12345）。"
    ),
    "admin.report_header": "用量报告（{period}）：",
    "admin.report_line": (
        "{key}：{calls} · 输入 {tokens_in} · 输出 {tokens_out} · {images} · 约 ¥{cost}"
    ),
    "help.header": "我能做这些事。私聊我或 @我 就能聊天。",
    "help.admin_header": "管理员命令：",
    "help.ask": "向模型提问（群聊中 @我 也可以）",
    "help.image": "生成图片；--size 的格式为 宽x高，--style 为风格名称（任何语言均可）",
    "help.reset": "开启新对话",
    "help.forget": "删除我保存的你的消息",
    "help.persona": "查看、设置或清除本对话的人设",
    "help.quota": "查看你的额度和剩余量",
    "help.usage": "查看你的用量",
    "help.cancel": "取消你正在进行或排队中的请求",
    "help.help": "显示本帮助",
    "help.about": "关于本机器人及 AI 生成内容的说明",
    "help.lang": "设置机器人提示信息的语言",
    "help.admin": "管理工具（仅限管理员）",
    "help.admin_grant": "为用户充值 token 或图片额度",
    "help.admin_limit": "设置用户额度（none 表示不限，default 表示恢复默认）",
    "help.admin_allow": "允许用户使用机器人",
    "help.admin_deny": "禁止用户使用机器人",
    "help.admin_role": "设置用户角色",
    "help.admin_report": "查看某日或某月的用量报告",
    "help.admin_channel": "设置本频道的策略",
    # --- core: answer buttons -------------------------------------------------------------
    "button.regenerate": "重新生成",
    "button.new_chat": "新对话",
    "action.stale": (
        "这个按钮属于较早的回答（已有更新的回答，或对话已重置），所以没有做任何更改。"
    ),
    # --- core: hardening (issue 7) -----------------------------------------------------------
    "help.image_sizes": "    图片尺寸：{sizes}",
    "limit.free_images": "免费图片",
    "persona.too_long": "人设太长了：{chars} 个字符，上限为 {limit}。没有做任何更改。",
    "persona.bad_chars": "人设不能包含控制字符（例如 NUL 或终端转义序列）。没有做任何更改。",
    "answer.cut_quota": "\n\n（回答被截断了：你剩余的 token 额度已用完。）",
    "answer.cut_model": (
        "\n\n（回答被截断了：已达到模型单次回答的上限 {tokens} 个 token。可以让我继续。）"
    ),
    "admin.deny_admin": (
        "{user} 是管理员，管理员始终拥有使用权限，所以没有做任何更改。请先撤销其管理员角色。"
    ),
    "admin.channel_in_dm": (
        "频道设置只适用于群组和频道，所以没有做任何更改。请在要修改的频道里发送这条命令。"
    ),
    # --- adapters (owner: adapter helper): the base's own sentences and the console's -------
    "error.platform": "聊天平台没能送达消息，请重试。",
    "adapter.image_undelivered": "图片没能发送给你。",
    "console.banner": (
        "hybot 演示。输入消息或 /help；“@名字 文本”以其他用户身份发言，"
        "“& 文本”在后台发送，!wait 等待后台回复，!quit 或 Ctrl-D 退出。"
    ),
    "console.background": "（后台）",
    "console.private": "（仅你可见）",
    "console.saved": "已保存 {path}",
    "console.withdrawn": "［上一条回答已撤回］",
    "console.internal_error": "内部错误（详见日志）",
    # --- store (owner: store helper) ---------------------------------------------------
    "error.store_busy": "机器人的数据库正忙，请稍后再试。",
    # --- durable (owner: durable helper) --------------------------------------------------
    "admin.ambiguous_user": (
        "这里有多位用户叫 {user}（{users}），所以没有做任何更改。"
        "请用 platform:id 的形式写出你指的那一位。"
    ),
    # --- Slack adapter (owner: slack helper) ---------------------------------------------
    "slack.thinking": "正在思考…",
    "slack.working": "正在处理…",
    "slack.prompt_explain_title": "讲解",
    "slack.prompt_explain": "用三句话讲清楚光合作用是怎么回事。",
    "slack.prompt_image_title": "生成图片",
    "slack.prompt_image": "/image 黎明时分的水彩灯塔",
    "slack.prompt_quota_title": "我的额度",
    # --- telegram (owner: the Telegram adapter) ----------------------------------------------
    "telegram.start": (
        "你好！我是基于腾讯混元的助手。可以直接给我发消息，或在群里 @ 我。每个人都有使用额度，"
        "发送 /quota 查看你的额度。我的回答和图片由 AI 生成，可能有误。"
    ),
    "telegram.privacy": (
        "致群管理员：电报的隐私模式开启时（默认），我只能看到 @ 我、回复我或以命令开头的消息。"
        "可在 @BotFather 中用 /setprivacy 修改，然后把我移出群再重新拉进来。"
    ),
    # --- core: command syntax, sizes and counts (fixcore) ----------------------------------
    "image.size_format": "尺寸的格式应为 1024x1024（宽x高，单位为像素）。",
    "image.size_rule": "{model} 可用尺寸：{sizes}。",
    "command.usage_only": "用法：{usage}",
    "count.images.one": "图片 {n} 张",
    "count.images.other": "图片 {n} 张",
    "count.tokens_in.one": "输入 {n} token",
    "count.tokens_in.other": "输入 {n} token",
    "count.tokens_out.one": "输出 {n} token",
    "count.tokens_out.other": "输出 {n} token",
    "count.calls.one": "调用 {n} 次",
    "count.calls.other": "调用 {n} 次",
    "count.stored_messages.one": "{n} 条已存储消息",
    "count.stored_messages.other": "{n} 条已存储消息",
}

CATALOGUE: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"en": MappingProxyType(_EN), "zh": MappingProxyType(_ZH)}
)
"""The read-only message catalogue: ``CATALOGUE[lang][key]`` is a ``str.format`` template."""

# QuotaExceeded.limit_name values (quota.py) → label keys; "org/<name>" wraps another label.
_LIMIT_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "tokens/day": "limit.tokens_day",
        "tokens/month": "limit.tokens_month",
        "images/day": "limit.images_day",
        "images/month": "limit.images_month",
        "rpm": "limit.rpm",
        "requests/minute": "limit.rpm",
        "free images": "limit.free_images",
        "free_images": "limit.free_images",
    }
)


def normalize_language(tag: str) -> str:
    """``"zh"``/``"en"`` for a language tag (``"zh-Hans"``, ``"zh_TW"``, ``"EN-us"``), else ``""``.

    Chinese tags of any script or region map to ``"zh"``: the catalogue has Simplified Chinese
    only, which Traditional-Chinese readers read far better than English.
    """
    base = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return base if base in LANGUAGES else ""


def resolve_language(
    *, user_setting: str = "", platform_hint: str = "", default: str = "en"
) -> str:
    """The language to answer a user in: ``"zh"`` or ``"en"``.

    The user's own setting (``/lang``) wins unless it is empty or ``"auto"``; then the
    platform's hint (e.g. Telegram ``language_code``, Slack locale); then ``default``; and
    ``"en"`` when ``default`` is not a supported language either.
    """
    for candidate in (user_setting, platform_hint, default):
        lang = normalize_language(candidate)
        if lang:
            return lang
    return "en"


def t(key: str, lang: str, /, **params: object) -> str:
    """The sentence ``key`` in ``lang`` (unsupported languages get English), formatted with
    ``params``. Raises ``KeyError`` for an unknown key or a placeholder left without a value;
    extra parameters are ignored."""
    table = CATALOGUE.get(lang) or CATALOGUE.get(normalize_language(lang)) or CATALOGUE["en"]
    template = table[key]
    try:
        return template.format_map(params)
    except KeyError as err:
        raise KeyError(f"message {key!r} needs parameter {err.args[0]!r}") from err


def t_count(key: str, lang: str, n: int) -> str:
    """``n`` things in ``lang`` with the right grammatical number: the sentence
    ``<key>.one`` when ``n == 1``, else ``<key>.other`` (Chinese has one form, written under
    both keys), formatted with ``n``. ``t_count("count.images", "en", 1)`` is "1 image"."""
    return t(f"{key}.{'one' if n == 1 else 'other'}", lang, n=n)


def limit_label(limit_name: str, lang: str) -> str:
    """A readable name for a quota limit (``"tokens/day"`` → "daily tokens" / "每日 token").

    ``"org/..."`` names are the account-wide budget; unknown names are returned unchanged.
    """
    if limit_name.startswith("org/"):
        inner = limit_label(limit_name[4:], lang)
        return t("limit.org", lang, inner=inner)
    key = _LIMIT_KEYS.get(limit_name)
    return t(key, lang) if key else limit_name


def format_reset(resets_at: datetime | None, lang: str, *, tz: tzinfo | None = None) -> str:
    """When a limit resets, for ``quota.exceeded``/``quota.status_line``.

    ``None`` (the limit never resets by itself) → the ``quota.never`` sentence. Otherwise
    ``"YYYY-MM-DD HH:MM UTC+08:00"``, converted to ``tz`` when given (the quota time zone), so
    the offset always says which clock is meant.
    """
    if resets_at is None:
        return t("quota.never", lang)
    when = resets_at.astimezone(tz) if tz is not None and resets_at.tzinfo else resets_at
    text = when.strftime("%Y-%m-%d %H:%M")
    offset = when.utcoffset()
    if offset is None:
        return text
    minutes = int(offset.total_seconds()) // 60
    if minutes == 0:
        return f"{text} UTC"
    sign = "+" if minutes > 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text} UTC{sign}{hours:02d}:{mins:02d}"


def error_message(
    err: HybotError,
    lang: str,
    *,
    tz: tzinfo | None = None,
    prefix: str = "/",
    image_model: str = "",
    image_sizes: str = "",
) -> str:
    """The sentence to show a chat user for ``err``, in ``lang``, chosen by ``err.kind``.

    Quota errors name the limit, what is left and when it resets (in ``tz`` when given);
    ``InputTooLong`` states size and limit when known; a ``CommandError`` shows its usage line
    (``usage == "/help"``: an unknown command; empty: the generic
    sentence), its leading ``/`` written as ``prefix`` (``Inbound.command_prefix``);
    an ``ImageSizeFormat`` also says what a size looks like and the sizes ``image_model``
    takes (``image_sizes``, in ``lang``). A kind without a catalogue entry
    (a future error class) falls back to the error's own English ``user_message``.
    """
    if isinstance(err, QuotaExceeded):
        return t(
            "quota.exceeded",
            lang,
            limit=limit_label(err.limit_name, lang),
            remaining=max(0, err.remaining),
            resets=format_reset(err.resets_at, lang, tz=tz),
        ) + (t("quota.needed", lang, needed=err.needed) if err.needed else "")
    if isinstance(err, CommandError):
        usage = prefix + err.usage[1:] if err.usage.startswith("/") else err.usage
        if isinstance(err, ImageSizeFormat) and err.usage:
            parts = [t("image.size_format", lang)]
            if image_model and image_sizes:
                parts.append(t("image.size_rule", lang, model=image_model, sizes=image_sizes))
            parts.append(t("command.usage_only", lang, usage=usage))
            return ("" if normalize_language(lang) == "zh" else " ").join(parts)
        if err.usage == "/help":
            return t("unknown_command", lang, usage=usage)
        if err.usage:
            return t("command.usage", lang, usage=usage)
        return t("error.command", lang)
    if isinstance(err, InputTooLong) and err.limit > 0:
        return t("input_too_long.detail", lang, tokens=err.tokens, limit=err.limit)
    key = f"error.{err.kind}"
    if key in CATALOGUE["en"]:
        return t(key, lang)
    return err.user_message
