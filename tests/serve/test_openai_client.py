"""temper-serve through the official OpenAI Python client, as an application would call vLLM."""

import concurrent.futures
import json
import urllib.request

import openai
import pytest


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2"]


def test_completion_and_its_stream_agree(client):
    whole = client.completions.create(model="smollm2", prompt="The capital of France is",
                                      max_tokens=12, temperature=0)
    choice = whole.choices[0]
    assert choice.finish_reason == "length"
    assert whole.usage.completion_tokens == 12
    assert "Paris" in choice.text
    chunks = list(client.completions.create(model="smollm2", prompt="The capital of France is",
                                            max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_stream_with_usage(client):
    messages = [{"role": "system", "content": "You are brief."},
                {"role": "user", "content": "Say hello."}]
    whole = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16,
                                           temperature=0)
    text = whole.choices[0].message.content
    assert whole.choices[0].message.role == "assistant" and text
    stream = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_seeded_sampling_repeats(client):
    args = dict(model="smollm2", prompt="Once upon a time", max_tokens=16, temperature=0.8,
                top_p=0.9, seed=7)
    first = client.completions.create(**args).choices[0].text
    second = client.completions.create(**args).choices[0].text
    assert first == second


def test_concurrent_greedy_requests_match_sequential_ones(client):
    prompts = ["def add(a, b):", "The sky is", "Water boils at", "My favourite food is"]

    def one(p):
        return client.completions.create(model="smollm2", prompt=p, max_tokens=16,
                                         temperature=0).choices[0].text

    sequential = [one(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        concurrent_ = list(pool.map(one, prompts))
    assert concurrent_ == sequential


def test_errors_reach_the_client_as_openai_errors(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="gpt-4", prompt="Hi", max_tokens=2)
    assert "smollm2" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="smollm2", prompt="Hi", max_tokens=2, n=3)
    assert "n = 1" in str(e.value)


def test_sagemaker_contract(server):
    with urllib.request.urlopen(server + "/ping") as r:
        assert r.status == 200
    req = urllib.request.Request(
        server + "/invocations",
        data=json.dumps({"inputs": "The capital of France is",
                         "parameters": {"max_new_tokens": 8, "details": True}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        body = json.load(r)
    assert body["details"]["generated_tokens"] == 8
    assert "Paris" in body["generated_text"]
