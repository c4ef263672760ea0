"""temper-serve over temper's own artifacts: an INT8 checkpoint and its tensor-parallel
pre-sharded twin (three ranks, one thread each) answer concurrent requests as they answer
them one at a time, and the same greedy text as each other."""

import concurrent.futures

import openai

PROMPTS = ["The capital of France is", "def add(a, b):", "Water boils at", "The sky is"]


def completions(url: str, name: str, parallel: bool) -> list[str]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

    def one(p):
        return client.completions.create(model=name, prompt=p, max_tokens=8,
                                         temperature=0).choices[0].text

    if not parallel:
        return [one(p) for p in PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(one, PROMPTS))


def test_sharded_and_whole_int8_serve_the_same_text_batched_or_not(artifact_servers):
    whole = completions(artifact_servers["int8-w8a16"], "int8-w8a16", parallel=False)
    assert all(whole)
    assert completions(artifact_servers["int8-w8a16"], "int8-w8a16", parallel=True) == whole
    sharded = completions(artifact_servers["tp3-int8"], "tp3-int8", parallel=True)
    assert sharded == whole
    assert completions(artifact_servers["tp3-int8"], "tp3-int8", parallel=False) == whole
