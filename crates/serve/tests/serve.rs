//! `temper-serve` end to end on loopback with the real SmolLM2: the SageMaker container
//! contract and the OpenAI endpoints, continuous batching (concurrent requests give what each
//! gives alone), back-pressure, client disconnects, timeouts and bad input, with the server
//! still serving after each.

mod common;

use common::{post_json, smollm2, Server};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use temper_runtime::generate::{generate, GenerateOptions};
use temper_runtime::{LoadOptions, Model};
use temper_text::sampling::SamplingParams;

const PROMPTS: [&str; 4] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colours are",
];

/// What greedy generation gives for `prompt` run alone in-process.
fn alone(
    model: &Model,
    tok: &tokenizers::Tokenizer,
    eos: &[u32],
    prompt: &str,
    n: usize,
) -> String {
    let ids = tok.encode(prompt, true).unwrap().get_ids().to_vec();
    let opts = GenerateOptions {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        stop_strings: vec![],
        eos_token_ids: eos.to_vec(),
    };
    generate(model, tok, &ids, &opts, &mut |_: &str| {})
        .unwrap()
        .text
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_requests_are_batched_and_each_gets_what_it_gets_alone() {
    batched_requests_match_alone(&["--max-batch", "4"]);
}

/// Prompts prefilled 3 tokens a step, beside the others' decode tokens.
#[test]
fn prompts_prefilled_in_chunks_give_the_same_text() {
    batched_requests_match_alone(&["--max-batch", "4", "--max-step-tokens", "3"]);
}

fn batched_requests_match_alone(server_args: &[&str]) {
    let dir = smollm2();
    let model = Model::load(&dir, &LoadOptions::default()).unwrap();
    let tok = temper_text::tokenizer::load_tokenizer(&dir.join("tokenizer.json")).unwrap();
    let eos = temper_text::config::GenerationDefaults::from_model_dir(&dir, &tok)
        .unwrap()
        .eos_token_ids;
    let n = 24;
    let want: Vec<String> = PROMPTS
        .iter()
        .map(|p| alone(&model, &tok, &eos, p, n))
        .collect();
    drop(model);

    let server = Server::start(server_args);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let (status, _) = (
            client
                .get(server.url("/ping"))
                .send()
                .await
                .unwrap()
                .status(),
            (),
        );
        assert_eq!(status, 200);
        // Half through /invocations, half through /v1/completions, all at once.
        let requests = PROMPTS.iter().enumerate().map(|(i, p)| {
            let client = client.clone();
            let server = &server;
            async move {
                if i % 2 == 0 {
                    let body = json!({"inputs": p, "parameters": {"max_new_tokens": n}});
                    let (s, v) = post_json(&client, &server.url("/invocations"), &body).await;
                    assert_eq!(s, 200, "{v}");
                    v["generated_text"].as_str().unwrap().to_string()
                } else {
                    let body = json!({"prompt": p, "max_tokens": n, "temperature": 0});
                    let (s, v) = post_json(&client, &server.url("/v1/completions"), &body).await;
                    assert_eq!(s, 200, "{v}");
                    assert_eq!(v["object"], "text_completion");
                    assert_eq!(v["usage"]["completion_tokens"], json!(n), "{v}");
                    v["choices"][0]["text"].as_str().unwrap().to_string()
                }
            }
        });
        let got = futures::future::join_all(requests).await;
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w, g, "prompt {i} ({:?}) differs when batched", PROMPTS[i]);
        }
        // They really ran together: some decode step held more than one sequence.
        let text = server.metrics_text(&client).await;
        let steps = metric_sum(&text, "temper_batch_size_count");
        let sum = metric_sum(&text, "temper_batch_size_sum");
        assert!(
            sum / steps > 1.5,
            "mean batch {} over {steps} steps:\n{text}",
            sum / steps
        );
        assert_eq!(
            metric_sum(&text, "temper_generation_tokens_total"),
            (4 * n) as f64
        );
    });
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reads a streamed body to the end as text.
async fn body_text(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn streams_carry_the_same_text_as_whole_responses() {
    let server = Server::start(&[]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let prompt = PROMPTS[1];
        let (_, whole) = post_json(
            &client,
            &server.url("/invocations"),
            &json!({"inputs": prompt, "parameters": {"max_new_tokens": 20, "details": true}}),
        )
        .await;
        let text = whole["generated_text"].as_str().unwrap();
        assert_eq!(whole["details"]["finish_reason"], "length");
        assert_eq!(whole["details"]["generated_tokens"], 20);
        let tokens = whole["details"]["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 20);
        assert!(tokens
            .iter()
            .all(|t| t["log_prob"].as_f64().unwrap() <= 0.0));

        // LMI JSON lines.
        let resp = client
            .post(server.url("/invocations"))
            .body(
                json!({"inputs": prompt, "parameters": {"max_new_tokens": 20}, "stream": true})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "application/jsonlines");
        let lines: Vec<Value> = body_text(resp)
            .await
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let pieces: String = lines
            .iter()
            .filter_map(|l| l["token"]["text"].as_str())
            .collect();
        assert_eq!(pieces, text);
        // As LMI streams: every line carries a token; the last one also the whole text.
        assert!(lines.iter().all(|l| l["token"].is_object()), "{lines:?}");
        assert_eq!(lines.len(), 20);
        assert_eq!(lines.last().unwrap()["generated_text"], text);

        // OpenAI server-sent events.
        let resp = client
            .post(server.url("/v1/completions"))
            .body(
                json!({"prompt": prompt, "max_tokens": 20, "temperature": 0, "stream": true,
                         "stream_options": {"include_usage": true}})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let body = body_text(resp).await;
        let data: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(*data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(streamed, text);
        let finish: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finish, [&json!("length")]);
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 20);
    });
}

#[test]
fn a_full_queue_answers_429_and_the_server_keeps_serving() {
    // One running, one waiting: the rest of a burst is refused at once. The first request
    // is running before the burst is sent (a burst that arrives before the engine takes
    // anything would find the one waiting place already taken by its own first request).
    let server = Server::start(&["--max-batch", "1", "--max-queue", "1"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let long = {
            let client = client.clone();
            let url = server.url("/v1/completions");
            tokio::spawn(async move {
                let body = json!({"prompt": "Tell me a story.", "max_tokens": 400,
                                  "ignore_eos": true, "temperature": 0});
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        };
        let running = server
            .wait_for_metric(&client, "temper_running_sequences", 1.0, 200)
            .await;
        assert_eq!(running, 1.0, "the first request never started");
        let burst = (0..5).map(|_| {
            let client = client.clone();
            let url = server.url("/invocations");
            async move {
                let resp = client
                    .post(url)
                    .body(
                        json!({"inputs": "Tell me a story.", "parameters": {"max_new_tokens": 40}})
                            .to_string(),
                    )
                    .send()
                    .await
                    .unwrap();
                let retry = resp.headers().get("retry-after").cloned();
                let status = resp.status().as_u16();
                let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
                (status, retry, body)
            }
        });
        let results = futures::future::join_all(burst).await;
        assert_eq!(long.await.unwrap(), 200);
        let ok = results.iter().filter(|r| r.0 == 200).count();
        let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
        // While the first runs, one of the burst waits (and is served) and four are refused.
        assert_eq!((ok, refused.len()), (1, 4), "{results:?}");
        for (_, retry, body) in &refused {
            assert_eq!(retry.as_ref().unwrap(), "1");
            assert!(
                body["message"].as_str().unwrap().contains("at capacity"),
                "{body}"
            );
        }
        // Nothing is left behind and the next request is served.
        assert_eq!(server.metric(&client, "temper_queue_depth").await, 0.0);
        let (s, _) = post_json(
            &client,
            &server.url("/invocations"),
            &json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}),
        )
        .await;
        assert_eq!(s, 200);
    });
}

#[test]
fn a_queued_request_whose_client_left_frees_its_place_at_once() {
    // One running, one waiting.
    let server = Server::start(&["--max-batch", "1", "--max-queue", "1"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let long = json!({"prompt": "Tell me a story.", "max_tokens": 150, "ignore_eos": true});
        let running = tokio::spawn({
            let (client, url, body) = (client.clone(), server.url("/v1/completions"), long.clone());
            async move { post_json(&client, &url, &body).await.0 }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Queued behind it, then gone.
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let gone = impatient
            .post(server.url("/v1/completions"))
            .body(long.to_string())
            .send()
            .await;
        assert!(
            gone.is_err(),
            "the queued request was answered before its client left"
        );
        let cancelled = server
            .wait_for_metric(&client, "temper_cancelled_requests_total", 1.0, 40)
            .await;
        assert_eq!(cancelled, 1.0, "{}", server.log());
        // Its place is free while the first still runs: the next request queues, not 429.
        let (s, v) = post_json(
            &client,
            &server.url("/v1/completions"),
            &json!({"prompt": "Hi", "max_tokens": 2}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(running.await.unwrap(), 200);
        assert_eq!(server.metric(&client, "temper_queue_depth").await, 0.0);
    });
}

#[test]
fn a_client_that_leaves_mid_stream_frees_its_place() {
    let server = Server::start(&["--max-batch", "2"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let resp = client
            .post(server.url("/v1/completions"))
            .body(
                json!({"prompt": "Write a long essay about the sea.", "max_tokens": 2000,
                         "temperature": 0, "stream": true})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let mut stream = resp.bytes_stream();
        // Wait for the first token, then hang up.
        stream.next().await.unwrap().unwrap();
        drop(stream);
        let cancelled = server
            .wait_for_metric(&client, "temper_cancelled_requests_total", 1.0, 100)
            .await;
        assert_eq!(cancelled, 1.0, "{}", server.log());
        // The engine counts the cancellation as it drops the sequence and updates the
        // running gauge after its step: the place is free within a few steps.
        let mut running = 1.0;
        for _ in 0..100 {
            running = server.metric(&client, "temper_running_sequences").await;
            if running == 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(running, 0.0, "{}", server.log());
        assert!(
            server
                .metric(&client, "temper_generation_tokens_total")
                .await
                < 2000.0
        );
        let (s, _) = post_json(
            &client,
            &server.url("/v1/completions"),
            &json!({"prompt": "Hi", "max_tokens": 2}),
        )
        .await;
        assert_eq!(s, 200);
    });
}

#[test]
fn a_request_past_its_timeout_fails_with_504() {
    let server = Server::start(&["--request-timeout-secs", "1"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let (s, v) = post_json(&client, &server.url("/invocations"),
            &json!({"inputs": "Write a long essay about the sea.", "parameters": {"max_new_tokens": 2000}})).await;
        assert_eq!(s, 504, "{v}");
        assert!(v["message"].as_str().unwrap().contains("timeout"), "{v}");
        assert_eq!(server.metric(&client, "temper_timed_out_requests_total").await, 1.0);
        let (s, _) = post_json(&client, &server.url("/invocations"),
            &json!({"inputs": "Hi", "parameters": {"max_new_tokens": 2}})).await;
        assert_eq!(s, 200);
    });
}

#[test]
fn bad_requests_are_refused_by_name_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-body-bytes", "4096", "--max-input-len", "64"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let inv = server.url("/invocations");
        let cmp = server.url("/v1/completions");
        let chat = server.url("/v1/chat/completions");
        let raw = |url: String, body: String| {
            let client = client.clone();
            async move {
                let r = client.post(url).body(body).send().await.unwrap();
                let s = r.status().as_u16();
                (s, r.text().await.unwrap())
            }
        };
        let cases: Vec<(u16, String, &str)> = vec![
            {
                let (s, b) = raw(inv.clone(), "{\"inputs\": \"Hi\", ".into()).await;
                (s, b, "EOF while parsing")
            },
            {
                let (s, b) = raw(
                    inv.clone(),
                    json!({"inputs": "Hi", "parameters": {"repetition_penalty": 1.1}}).to_string(),
                )
                .await;
                (s, b, "repetition_penalty")
            },
            {
                let (s, b) =
                    raw(inv.clone(), json!({"inputs": "x".repeat(5000)}).to_string()).await;
                (s, b, "4096 bytes")
            },
            {
                let (s, b) = raw(
                    inv.clone(),
                    json!({"inputs": "word ".repeat(100)}).to_string(),
                )
                .await;
                (s, b, "at most 64")
            },
            {
                let (s, b) = raw(
                    inv.clone(),
                    json!({"inputs": "Hi", "parameters": {"do_sample": true, "temperature": -1}})
                        .to_string(),
                )
                .await;
                (s, b, "temperature")
            },
            {
                let (s, b) = raw(
                    cmp.clone(),
                    json!({"prompt": "Hi", "logprobs": 1}).to_string(),
                )
                .await;
                (s, b, "logprobs")
            },
            {
                let (s, b) = raw(cmp.clone(), json!({"prompt": "Hi", "n": 2}).to_string()).await;
                (s, b, "n = 1")
            },
            {
                let (s, b) = raw(
                    cmp.clone(),
                    json!({"prompt": "Hi", "max_tokens": 0}).to_string(),
                )
                .await;
                (s, b, "at least one")
            },
            {
                let (s, b) = raw(cmp.clone(), json!({"prompt": [999999]}).to_string()).await;
                (s, b, "outside the vocabulary")
            },
            {
                let (s, b) = raw(chat.clone(), json!({"messages": []}).to_string()).await;
                (s, b, "messages is empty")
            },
            {
                let (s, b) = raw(
                    chat.clone(),
                    json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
                        .to_string(),
                )
                .await;
                (s, b, "text parts only")
            },
        ];
        for (i, (status, body, needle)) in cases.iter().enumerate() {
            let want = if needle.contains("bytes") { 413 } else { 400 };
            assert_eq!(*status, want, "case {i}: {body}");
            assert!(body.contains(needle), "case {i}: {body:?} lacks {needle:?}");
        }
        // Fields sent with their "off" value are accepted; a field of the wrong type is
        // named; more new tokens than the context leaves are refused, not cut.
        let (s, v) = post_json(
            &client,
            &cmp,
            &json!({"prompt": "Hi", "max_tokens": 2,
            "echo": false, "logprobs": null, "best_of": 1, "logit_bias": {}}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = post_json(
            &client,
            &cmp,
            &json!({"prompt": "Hi", "temperature": "hot"}),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("temperature"),
            "{v}"
        );
        let (s, v) = post_json(
            &client,
            &cmp,
            &json!({"prompt": "Hi", "max_tokens": 100000}),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ask for at most"),
            "{v}"
        );
        let (s, v) = post_json(&client, &cmp, &json!({"prompt": "Hi", "model": "gpt-4"})).await;
        assert_eq!(s, 404, "{v}");
        assert_eq!(v["error"]["param"], "model");
        let (s, v) = post_json(
            &client,
            &chat,
            &json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert!(
            server
                .metric(
                    &client,
                    "temper_requests_total{route=\"/invocations\",status=\"400\"}"
                )
                .await
                >= 3.0
        );
    });
}

#[test]
fn a_client_that_sends_its_headers_slowly_is_cut_off() {
    use std::io::{Read, Write};
    let server = Server::start(&["--header-timeout-secs", "1"]);
    let mut slow = std::net::TcpStream::connect(server.addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    slow.write_all(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection; read returns 0 (or a reset).
    let _ = slow.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    rt().block_on(async {
        let client = reqwest::Client::new();
        assert_eq!(
            client
                .get(server.url("/ping"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    });
}

/// With room in the KV budget for one sequence only, concurrent requests run one after
/// another (every step holds one sequence) and all are answered.
#[test]
fn requests_beyond_the_kv_budget_wait_their_turn() {
    // SmolLM2: 30 layers x 2 x 3 kv heads x 64 x 4 bytes = 46 KB per position; a request of
    // ~10 prompt + 100 new tokens reserves ~5 MB, and 0.007 GiB (7.5 MB) holds one.
    let server = Server::start(&["--max-batch", "4", "--kv-cache-gib", "0.007"]);
    rt().block_on(async {
        let client = reqwest::Client::new();
        let requests = (0..3).map(|_| {
            let client = client.clone();
            let url = server.url("/v1/completions");
            async move {
                let body =
                    json!({"prompt": "Tell me a story.", "max_tokens": 100, "ignore_eos": true});
                post_json(&client, &url, &body).await
            }
        });
        for (s, v) in futures::future::join_all(requests).await {
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["usage"]["completion_tokens"], 100);
        }
        let text = server.metrics_text(&client).await;
        let (sum, count) = (
            metric_sum(&text, "temper_batch_size_sum"),
            metric_sum(&text, "temper_batch_size_count"),
        );
        // Every step ran one sequence (with the default budget these three run together).
        assert!(
            count > 0.0 && (sum / count - 1.0).abs() < 1e-9,
            "mean batch {}",
            sum / count
        );
    });
}
