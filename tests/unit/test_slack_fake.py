"""The Slack fake answers the real slack_sdk client the way Slack does (so e2e tests mean it)."""

from __future__ import annotations

import aiohttp
import pytest
from fakes.slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, signed_headers
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient


async def test_web_api_upload_flow_and_faults() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
        auth = await client.auth_test()
        assert auth["user_id"] == "UBOT"
        posted = await client.chat_postMessage(channel="C1", text="hi", thread_ts="1.0")
        await client.chat_update(channel="C1", ts=posted["ts"], text="hi again")
        assert fake.messages[("C1", posted["ts"])]["text"] == "hi again"
        done = await client.files_upload_v2(
            channel="C1", content=b"\x89PNG", filename="a.png", title="t", alt_txt="alt"
        )
        assert done["file"]["title"] == "t"
        assert [c.method for c in fake.calls][-3:] == [
            "files.getUploadURLExternal",
            "upload",
            "files.completeUploadExternal",
        ]
        assert fake.of("files.getUploadURLExternal")[0].params["alt_txt"] == "alt"
        fake.fail("chat.update", retry_after=3)
        with pytest.raises(SlackApiError) as err:
            await client.chat_update(channel="C1", ts=posted["ts"], text="x")
        assert err.value.response.status_code == 429
        assert err.value.response.headers["Retry-After"] == "3"
        bad = AsyncWebClient(token="xoxb-wrong", base_url=fake.base_url)
        with pytest.raises(SlackApiError) as err:
            await bad.auth_test()
        assert err.value.response["error"] == "invalid_auth"


async def test_response_url_allows_five_uses() -> None:
    async with FakeSlack() as fake, aiohttp.ClientSession() as session:
        url = fake.response_url()
        statuses = []
        for _ in range(6):
            async with session.post(url, json={"text": "x"}) as resp:
                statuses.append(resp.status)
        assert statuses == [200] * 5 + [404]


def test_signed_headers_verify_with_slack_sdk() -> None:
    body = '{"type":"event_callback"}'
    headers = signed_headers(body)
    verifier = SignatureVerifier(SIGNING_SECRET)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    forged = signed_headers(body, secret="other")
    assert not verifier.is_valid(
        body, forged["X-Slack-Request-Timestamp"], forged["X-Slack-Signature"]
    )


async def test_conversations_replies_answers_from_posted_and_scripted_messages() -> None:
    async with FakeSlack() as fake:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
        fake.add_history("C1", "5.0", user="U1", ts="5.0", text="root")
        posted = await client.chat_postMessage(channel="C1", text="answer", thread_ts="5.0")
        await client.chat_postMessage(channel="C1", text="elsewhere", thread_ts="6.0")
        replies = await client.conversations_replies(channel="C1", ts="5.0")
        messages = replies["messages"]
        assert [m["ts"] for m in messages] == ["5.0", posted["ts"]]
        assert messages[0]["user"] == "U1" and "bot_id" not in messages[0]
        assert messages[1]["user"] == "UBOT" and messages[1]["bot_id"] == "BBOT"
        assert messages[1]["thread_ts"] == "5.0"
        with pytest.raises(SlackApiError) as err:
            await client.conversations_replies(channel="C1", ts="7.0")
        assert err.value.response["error"] == "thread_not_found"
