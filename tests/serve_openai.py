"""Drives a running `soup serve` with the `openai` Python client, as users' tools do.

Usage: python3 tests/serve_openai.py SPEC.json

SPEC (written by tui/tests/serve.rs): base_url, api_key, base (the base model's id),
adapters (ids /v1/models must list), greedy (cases {model, prompt, max_tokens, expected,
new_tokens}: the local `soup generate` answer for the same prompt and adapters), chat
({prompt, max_tokens, expected}: `soup generate --chat`). Exits 0 after printing
"openai client: all N checks held", non-zero with the failed check otherwise.
"""

import json
import math
import sys

try:
    import openai
except ImportError:
    sys.exit(
        "the `openai` Python package is missing: install it with "
        "`python3 -m pip install -r tests/requirements.txt` (.ci/run does)"
    )

spec = json.load(open(sys.argv[1]))
client = openai.OpenAI(
    base_url=spec["base_url"], api_key=spec["api_key"], max_retries=0, timeout=300
)
passed = 0


def check(cond, what):
    global passed
    if not cond:
        raise AssertionError(what)
    passed += 1


def error_shape(err, status, what):
    check(err.status_code == status, f"{what}: status {err.status_code}, expected {status}")
    body = err.body if isinstance(err.body, dict) else {}
    body = body.get("error", body)
    for key in ("message", "type", "param", "code"):
        check(key in body, f"{what}: error body {err.body!r} lacks {key!r}")
    check(bool(body["message"]), f"{what}: empty error message")


# /v1/models lists the base model and the stored adapters.
ids = [m.id for m in client.models.list().data]
check(spec["base"] in ids, f"/v1/models {ids} lacks the base model {spec['base']}")
for a in spec["adapters"]:
    check(a in ids, f"/v1/models {ids} lacks the adapter {a}")

# Greedy completions equal the local engine's answers, for the base model, an adapter and
# a composition.
for case in spec["greedy"]:
    r = client.completions.create(
        model=case["model"],
        prompt=case["prompt"],
        max_tokens=case["max_tokens"],
        temperature=0,
    )
    c = r.choices[0]
    check(
        c.text == case["expected"],
        f"{case['model']}: served {c.text!r}, local generate {case['expected']!r}",
    )
    check(r.usage.completion_tokens == case["new_tokens"], f"{case['model']}: usage {r.usage}")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "usage sum")
    check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason}")
    check(r.object == "text_completion" and r.model == case["model"], f"response {r}")

    # Streaming: the chunks concatenate to the same text.
    stream = client.completions.create(
        model=case["model"],
        prompt=case["prompt"],
        max_tokens=case["max_tokens"],
        temperature=0,
        stream=True,
    )
    pieces, finish = [], None
    for chunk in stream:
        for ch in chunk.choices:
            pieces.append(ch.text or "")
            finish = ch.finish_reason or finish
    check("".join(pieces) == case["expected"], f"streamed {pieces!r} != {case['expected']!r}")
    check(finish == c.finish_reason, f"streamed finish {finish} != {c.finish_reason}")

# A list of prompts: one choice each, in order, as if sent alone.
first, second = spec["greedy"][0], spec["greedy"][1]
if first["model"] == second["model"] and first["max_tokens"] == second["max_tokens"]:
    r = client.completions.create(
        model=first["model"],
        prompt=[first["prompt"], second["prompt"]],
        max_tokens=first["max_tokens"],
        temperature=0,
    )
    check([c.index for c in r.choices] == [0, 1], "choice indices")
    check(
        [c.text for c in r.choices] == [first["expected"], second["expected"]],
        f"batched prompts {[c.text for c in r.choices]!r}",
    )

# A stop string cuts the text before it, and finish_reason says stop.
full = spec["greedy"][0]["expected"]
if len(full) >= 6:
    stop = full[3:5]
    r = client.completions.create(
        model=spec["greedy"][0]["model"],
        prompt=spec["greedy"][0]["prompt"],
        max_tokens=spec["greedy"][0]["max_tokens"],
        temperature=0,
        stop=[stop],
    )
    check(r.choices[0].text == full[: full.find(stop)], f"stop {stop!r}: {r.choices[0].text!r}")
    check(r.choices[0].finish_reason == "stop", "finish_reason after a stop string")

# echo + logprobs: the prompt's own tokens scored (lm-evaluation-harness loglikelihood).
prompt = spec["greedy"][0]["prompt"]
r = client.completions.create(
    model=spec["base"], prompt=prompt, max_tokens=0, echo=True, logprobs=2, temperature=0
)
lp = r.choices[0].logprobs
check(r.choices[0].text == prompt, f"echo text {r.choices[0].text!r}")
check(len(lp.tokens) == r.usage.prompt_tokens, f"{len(lp.tokens)} tokens, usage {r.usage}")
check(len(lp.token_logprobs) == len(lp.tokens), "one logprob per token")
check(lp.token_logprobs[0] is None, "the first token has no logprob")
for v, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
    check(math.isfinite(v) and v <= 0.0, f"logprob {v}")
    # Two alternatives (one when both print alike, e.g. halves of one character).
    check(1 <= len(top) <= 2 and max(top.values()) >= v - 1e-6, f"top_logprobs {top} vs {v}")
check(lp.text_offset == sorted(lp.text_offset), "text offsets increase")
# With one new token (what lm-eval sends): prompt tokens + 1, and the prompt part unchanged.
r1 = client.completions.create(
    model=spec["base"], prompt=prompt, max_tokens=1, echo=True, logprobs=1, temperature=0
)
lp1 = r1.choices[0].logprobs
check(len(lp1.tokens) == len(lp.tokens) + r1.usage.completion_tokens, "echo + 1 token")
check(
    all(abs(a - b) < 1e-5 for a, b in zip(lp1.token_logprobs[1:len(lp.tokens)], lp.token_logprobs[1:])),
    "prompt logprobs do not depend on max_tokens",
)

# Sampling with a seed is reproducible.
kw = dict(model=spec["base"], prompt=prompt, max_tokens=8, temperature=0.9, top_p=0.95, seed=7)
check(
    client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text,
    "seeded sampling is reproducible",
)

# Chat with the model's template, plain and streamed.
chat = spec["chat"]
r = client.chat.completions.create(
    model=spec["base"],
    messages=[{"role": "user", "content": chat["prompt"]}],
    max_tokens=chat["max_tokens"],
    temperature=0,
)
msg = r.choices[0].message
check(msg.role == "assistant", f"role {msg.role}")
check(msg.content == chat["expected"], f"chat {msg.content!r} != local {chat['expected']!r}")
check(r.object == "chat.completion", f"object {r.object}")
stream = client.chat.completions.create(
    model=spec["base"],
    messages=[{"role": "user", "content": chat["prompt"]}],
    max_tokens=chat["max_tokens"],
    temperature=0,
    stream=True,
)
pieces, finish = [], None
for chunk in stream:
    check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
    for ch in chunk.choices:
        pieces.append(ch.delta.content or "")
        finish = ch.finish_reason or finish
check("".join(pieces) == chat["expected"], f"streamed chat {pieces!r}")
check(finish == r.choices[0].finish_reason, f"streamed chat finish {finish}")

# Errors: OpenAI's shape, the right status, the client's own exception classes.
try:
    client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    check(False, "an unknown model was served")
except openai.NotFoundError as e:
    error_shape(e, 404, "unknown model")
    check(spec["base"] in str(e.body), "the 404 lists what exists")
try:
    client.completions.create(model=spec["base"], prompt="x", max_tokens=1, n=2)
    check(False, "n=2 was accepted")
except openai.BadRequestError as e:
    error_shape(e, 400, "n=2")
try:
    openai.OpenAI(base_url=spec["base_url"], api_key="wrong-key", max_retries=0).models.list()
    check(False, "a wrong API key was accepted")
except openai.AuthenticationError as e:
    error_shape(e, 401, "wrong key")

print(f"openai client: all {passed} checks held")
