"""The official OpenAI Python client against a running dynamo gateway.

Usage: python openai_client.py BASE_URL MODEL

Every call must succeed and parse into the client's own types; the checks are about shape, and
about the log-probabilities of greedy answers on the real model.
"""

import json
import re
import sys

import openai
import pydantic
from openai import OpenAI


def main(base_url: str, model: str) -> None:
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    models = [m.id for m in client.models.list()]
    assert model in models, models

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=12)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert isinstance(chat.choices[0].message.content, str) and chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.prompt_tokens > 0 and 0 < chat.usage.completion_tokens <= 12

    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text, chunks
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)

    completion = client.completions.create(model=model, prompt=["Once upon", "a time"], max_tokens=4)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.text for c in completion.choices)

    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model=model, prompt="Hello", max_tokens=4, stream=True)
        if c.choices
    )
    assert streamed, "empty streamed completion"

    check_logprobs(client, model, messages)
    check_structured_outputs(client, model)
    check_embeddings(client)
    check_responses(client, model)

    check_choices(client, model, messages)

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as error:
        assert error.status_code == 404

    print(f"openai {openai.__version__}: models, chat (whole and streamed), completions "
          f"(batched and streamed), several choices (n, best_of), log-probabilities, structured "
          f"outputs, embeddings, responses (whole, streamed and parsed, with "
          f"function calls, stored and continued, a background stream picked up again) and "
          f"errors all parse")


def check_logprobs(client: OpenAI, model: str, messages: list) -> None:
    """Greedy answers with log-probabilities: each token's is at most 0 and the largest of its
    alternatives, the tokens spell the answer, and a streamed rerun gives the same ones."""
    greedy = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0}
    chat = client.chat.completions.create(**greedy, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert content, chat
    for entry in content:
        assert entry.logprob <= 0, entry
        assert len(entry.top_logprobs) == 3, entry
        best = max(top.logprob for top in entry.top_logprobs)
        assert abs(entry.logprob - best) < 1e-6, entry
        assert bytes(entry.bytes) == entry.token.encode(), entry
    assert "".join(entry.token for entry in content) == chat.choices[0].message.content, chat

    stream = client.chat.completions.create(**greedy, logprobs=True, top_logprobs=3, stream=True)
    streamed = [entry for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                for entry in chunk.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content], streamed
    assert all(abs(a.logprob - b.logprob) < 1e-2 for a, b in zip(streamed, content)), streamed

    completion = client.completions.create(model=model, prompt="The capital of France is",
                                           max_tokens=4, temperature=0, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text, completion
    assert all(lp <= 0 for lp in logprobs.token_logprobs), logprobs
    assert all(len(top) <= 2 for top in logprobs.top_logprobs), logprobs
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)

    # echo with logprobs, as lm-evaluation-harness scores a continuation: the prompt's tokens
    # first, the first with no log-probability, then the generated one.
    scored = client.completions.create(model=model, prompt="The capital of France is Paris",
                                       max_tokens=1, temperature=0, logprobs=1, echo=True)
    logprobs = scored.choices[0].logprobs
    assert scored.choices[0].text.startswith("The capital of France is Paris"), scored
    assert len(logprobs.tokens) == scored.usage.prompt_tokens + 1, scored
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None, logprobs
    assert all(lp <= 0 for lp in logprobs.token_logprobs[1:]), logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text, logprobs
    # Streamed, the echo comes first with the same scores, and the chunks add up to the answer.
    chunks = list(client.completions.create(model=model, prompt="The capital of France is Paris",
                                            max_tokens=1, temperature=0, logprobs=1, echo=True,
                                            stream=True))
    echoed = chunks[0].choices[0]
    assert echoed.text == "The capital of France is Paris", chunks[0]
    assert echoed.logprobs.tokens == logprobs.tokens[:-1], echoed.logprobs
    assert echoed.logprobs.token_logprobs[0] is None, echoed.logprobs
    streamed = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert streamed == scored.choices[0].text, chunks

    # vLLM's prompt_logprobs on chat: one entry per token of the rendered conversation, the
    # first null, each other holding the prompt token's own entry with its rank.
    rated = client.chat.completions.create(**greedy, extra_body={"prompt_logprobs": 1})
    entries = rated.model_extra["prompt_logprobs"]
    assert len(entries) == rated.usage.prompt_tokens and entries[0] is None, entries[:3]
    assert all(1 <= len(entry) <= 2 for entry in entries[1:]), entries
    assert all(scored["logprob"] <= 0 and scored["rank"] >= 1
               for entry in entries[1:] for scored in entry.values()), entries

    try:
        client.chat.completions.create(**greedy, logprobs=True, top_logprobs=21)
        raise AssertionError("top_logprobs=21 was accepted")
    except openai.BadRequestError as error:
        assert error.body["param"] == "top_logprobs", error.body


def check_choices(client: OpenAI, model: str, messages: list) -> None:
    """n choices agree under greedy decoding and differ under sampling, whole and streamed, each
    with its own finish reason; best_of returns n choices and counts every candidate's tokens;
    out-of-range values are a 400 naming the field."""
    greedy = client.chat.completions.create(model=model, messages=messages, max_tokens=8,
                                            temperature=0, n=3)
    assert [c.index for c in greedy.choices] == [0, 1, 2], greedy
    one = client.chat.completions.create(model=model, messages=messages, max_tokens=8,
                                         temperature=0)
    assert all(c.message.content == one.choices[0].message.content for c in greedy.choices), greedy
    assert all(c.finish_reason in ("stop", "length") for c in greedy.choices), greedy
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens, (greedy.usage, one.usage)
    assert greedy.usage.completion_tokens == 3 * one.usage.completion_tokens, greedy.usage

    poem = [{"role": "user", "content": "Write one line of a poem about the sea."}]
    sampled = client.chat.completions.create(model=model, messages=poem, max_tokens=16,
                                             temperature=1.0, top_p=1.0, n=4)
    texts = [c.message.content for c in sampled.choices]
    assert len(texts) == 4 and len(set(texts)) > 1, texts

    stream = client.chat.completions.create(model=model, messages=poem, max_tokens=12,
                                            temperature=1.0, n=2, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    by_choice, finishes = {0: "", 1: ""}, {}
    for chunk in chunks:
        for choice in chunk.choices:
            by_choice[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert all(by_choice.values()) and sorted(finishes) == [0, 1], (by_choice, finishes)
    assert chunks[-1].usage is not None and not chunks[-1].choices, chunks[-1]

    best = client.completions.create(model=model, prompt="The sea is", max_tokens=6, n=2,
                                     best_of=3, temperature=1.0)
    assert [c.index for c in best.choices] == [0, 1], best
    assert all(c.text for c in best.choices), best
    # Every candidate counts: at least the two returned, at most three times max_tokens.
    assert 2 <= best.usage.completion_tokens <= 3 * 6, best.usage

    for call, param in [
        (lambda: client.chat.completions.create(model=model, messages=messages, n=17), "n"),
        (lambda: client.completions.create(model=model, prompt="Hi", n=3, best_of=2), "best_of"),
        (lambda: client.completions.create(model=model, prompt="Hi", best_of=2, stream=True),
         "best_of"),
    ]:
        try:
            call()
            raise AssertionError(f"{param} out of range was accepted")
        except openai.BadRequestError as error:
            assert error.status_code == 400
            assert error.body["param"] == param, error.body


class Capital(pydantic.BaseModel):
    """The schema of the structured-output checks; pydantic validates the answers against it."""
    model_config = pydantic.ConfigDict(extra="forbid")
    city: str = pydantic.Field(max_length=24)
    country: str = pydantic.Field(max_length=24)
    population_millions: int = pydantic.Field(ge=0, le=100)


def check_structured_outputs(client: OpenAI, model: str) -> None:
    """response_format json_schema (whole, streamed, and through the client's own parse()),
    json_object, vLLM's structured_outputs (a choice, a regex, a Lark grammar) as a vLLM user
    sends them, in extra_body, and a forced function call: every answer parses and validates."""
    messages = [{"role": "user", "content":
                 "Give the capital of France as JSON: city, country, population in millions."}]
    schema = {"type": "object", "additionalProperties": False,
              "required": ["city", "country", "population_millions"],
              "properties": {"city": {"type": "string", "maxLength": 24},
                             "country": {"type": "string", "maxLength": 24},
                             "population_millions": {"type": "integer", "minimum": 0,
                                                     "maximum": 100}}}
    response_format = {"type": "json_schema",
                       "json_schema": {"name": "capital", "schema": schema, "strict": True}}
    common = {"model": model, "messages": messages, "max_tokens": 120, "temperature": 0}
    chat = client.chat.completions.create(**common, response_format=response_format)
    assert chat.choices[0].finish_reason == "stop", chat
    Capital.model_validate_json(chat.choices[0].message.content)

    stream = client.chat.completions.create(**common, response_format=response_format, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == chat.choices[0].message.content, (streamed, chat)

    # The client's own structured-output path: the schema comes from the pydantic model.
    parsed = client.chat.completions.parse(**common, response_format=Capital)
    assert isinstance(parsed.choices[0].message.parsed, Capital), parsed

    question = ('Reply with a JSON object with one key, "capital", whose value is the capital of '
                "France.")
    obj = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=80,
        temperature=0, response_format={"type": "json_object"})
    assert obj.choices[0].finish_reason == "stop", obj
    assert isinstance(json.loads(obj.choices[0].message.content), dict), obj

    # vLLM's other formats, in extra_body as its documentation shows; sampled, on chat and text
    # completions.
    sampled = {"model": model, "max_tokens": 40, "temperature": 1.0, "seed": 5}
    sentiment = [{"role": "user", "content": "Classify this sentiment: dynamo is wonderful!"}]
    labels = ["positive", "negative", "neutral"]
    chosen = client.chat.completions.create(
        **sampled, messages=sentiment, n=3, extra_body={"structured_outputs": {"choice": labels}})
    assert [c.message.content in labels for c in chosen.choices] == [True] * 3, chosen
    date = r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"
    text = client.completions.create(
        **sampled, prompt="The first moon landing was on",
        extra_body={"structured_outputs": {"regex": date}})
    assert re.fullmatch(date, text.choices[0].text), text
    lark = 'start: "[" WORD ("," WORD){0,2} "]"\nWORD: /[a-z]{1,8}/'
    listed = client.chat.completions.create(
        **sampled, messages=[{"role": "user", "content": "List three fruits."}],
        extra_body={"structured_outputs": {"grammar": lark}})
    assert re.fullmatch(r"\[[a-z]{1,8}(,[a-z]{1,8}){0,2}\]", listed.choices[0].message.content), \
        listed

    weather = {"type": "function", "function": {
        "name": "weather", "description": "The weather in a city",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                       "properties": {"city": {"type": "string", "maxLength": 24}}}}}
    forced = client.chat.completions.create(
        model=model, max_tokens=60, temperature=0, tools=[weather],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    calls = forced.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "weather", forced
    assert set(json.loads(calls[0].function.arguments)) == {"city"}, forced
    # Streamed, the arguments come piece by piece, the id and name with the first.
    stream = client.chat.completions.create(
        model=model, max_tokens=60, temperature=0, tools=[weather], stream=True,
        tool_choice={"type": "function", "function": {"name": "weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    pieces = [c.choices[0].delta.tool_calls[0] for c in stream
              if c.choices and c.choices[0].delta.tool_calls]
    assert len(pieces) > 1 and pieces[0].id and pieces[0].function.name == "weather", pieces
    assert "".join(p.function.arguments for p in pieces) == calls[0].function.arguments, pieces

    required = client.chat.completions.create(
        model=model, max_tokens=80, temperature=0, tools=[weather], tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Lyon?"}])
    assert required.choices[0].finish_reason == "tool_calls", required
    for call in required.choices[0].message.tool_calls:
        assert call.function.name == "weather", required
        assert set(json.loads(call.function.arguments)) == {"city"}, required
    # Streamed, each call starts once its name is whole and its arguments follow in pieces.
    stream = client.chat.completions.create(
        model=model, max_tokens=80, temperature=0, tools=[weather], tool_choice="required",
        stream=True, messages=[{"role": "user", "content": "What is the weather in Lyon?"}])
    joined = {}
    for chunk in stream:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = joined.setdefault(piece.index, {"name": piece.function.name, "arguments": ""})
            call["arguments"] += piece.function.arguments or ""
    assert [(c["name"], c["arguments"]) for c in joined.values()] == \
        [(c.function.name, c.function.arguments) for c in required.choices[0].message.tool_calls], \
        (joined, required)

    for bad, param in [
        ({"type": "regex", "regex": "a+"}, "response_format.type"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such"}}},
         "response_format.json_schema.schema"),
    ]:
        try:
            client.chat.completions.create(**common, response_format=bad)
            raise AssertionError(f"{bad} was accepted")
        except openai.BadRequestError as error:
            assert error.body["param"] == param, error.body


EMBEDDING_MODEL = "all-minilm-l6-v2"


def check_embeddings(client: OpenAI) -> None:
    """The main job's default embedding model: 384 numbers of unit length per input, whether the
    client asks for base64 (its default, decoded by the client) or floats, the same either way,
    and closer for sentences that mean the same."""
    models = [m.id for m in client.models.list()]
    assert EMBEDDING_MODEL in models, models
    sentences = ["The cat sits on the mat", "A cat is sitting on a mat", "Stock prices fell sharply"]
    answer = client.embeddings.create(model=EMBEDDING_MODEL, input=sentences)
    assert answer.object == "list" and answer.model == EMBEDDING_MODEL
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > 0
    vectors = [d.embedding for d in answer.data]
    for vector in vectors:
        assert len(vector) == 384, len(vector)
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-4
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))
    near, far = dot(vectors[0], vectors[1]), dot(vectors[0], vectors[2])
    assert near > far, (near, far)

    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=sentences[0], encoding_format="float")
    assert dot(floats.data[0].embedding, vectors[0]) > 0.99999

    try:
        client.embeddings.create(model=EMBEDDING_MODEL, input="hello", dimensions=64)
        raise AssertionError("dimensions=64 was accepted")
    except openai.BadRequestError as error:
        assert error.body["param"] == "dimensions", error.body


def check_responses(client: OpenAI, model: str) -> None:
    """The Responses API: text in, one assistant message out, whole and streamed, greedy so that
    both agree; a JSON schema output parsed by the client; function calls; stored responses."""
    question = "What is the capital of France?"
    whole = client.responses.create(
        model=model, input=question, instructions="Answer in one sentence.",
        max_output_tokens=16, temperature=0,
    )
    assert whole.object == "response" and whole.status in ("completed", "incomplete"), whole
    assert whole.output[0].role == "assistant" and whole.output_text, whole
    assert 0 < whole.usage.output_tokens <= 16 and whole.usage.input_tokens > 0, whole.usage

    deltas = []
    with client.responses.stream(
        model=model, input=[{"role": "user", "content": question}],
        instructions="Answer in one sentence.", max_output_tokens=16, temperature=0,
    ) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == whole.output_text, (deltas, final, whole)

    # Structured output through the client's own path: the schema from the pydantic model, in
    # text.format, and the output parsed back into it.
    parsed = client.responses.parse(
        model=model, input="Give the capital of France as JSON: city, country, population in "
        "millions.", max_output_tokens=120, temperature=0, text_format=Capital)
    assert isinstance(parsed.output_parsed, Capital), parsed
    assert parsed.text.format.type == "json_schema", parsed.text

    check_responses_tools(client, model)
    check_stored_responses(client, model, whole)
    check_background_stream(client, model, whole)


def check_stored_responses(client: OpenAI, model: str, stored) -> None:
    """A stored response: retrieved as it was returned, continued from by
    previous_response_id, its input items listed, deleted; then neither retrieved nor continued
    from."""
    assert stored.store, stored
    assert client.responses.retrieve(stored.id) == stored
    follow = client.responses.create(
        model=model, input="And the capital of Italy?", previous_response_id=stored.id,
        max_output_tokens=16, temperature=0)
    assert follow.previous_response_id == stored.id and follow.output_text, follow
    assert follow.usage.input_tokens > stored.usage.input_tokens, (follow.usage, stored.usage)
    # Its input items are its own input; the client follows the pages one item at a time.
    listed = client.responses.input_items.list(follow.id)
    assert [item.type for item in listed.data] == ["message"], listed
    assert listed.data[0].content[0].text == "And the capital of Italy?", listed
    two = client.responses.create(
        model=model, input=[{"role": "user", "content": "One"}, {"role": "user", "content": "Two"}],
        max_output_tokens=1)
    paged = [item.content[0].text for item in
             client.responses.input_items.list(two.id, limit=1, order="asc")]
    assert paged == ["One", "Two"], paged
    client.responses.delete(stored.id)
    try:
        client.responses.retrieve(stored.id)
        raise AssertionError("a deleted response was retrieved")
    except openai.NotFoundError:
        pass
    try:
        client.responses.create(model=model, input="And of Spain?", previous_response_id=stored.id)
        raise AssertionError("a deleted response was continued from")
    except openai.BadRequestError as error:
        assert error.body["code"] == "previous_response_not_found", error.body


def check_background_stream(client: OpenAI, model: str, whole) -> None:
    """A streamed background response whose stream the client closes after a few events: the
    generation goes on, and the client picks the events up again after the last it had; the text
    of both parts is the greedy answer's."""
    stream = client.responses.create(
        model=model, input="What is the capital of France?",
        instructions="Answer in one sentence.", max_output_tokens=16, temperature=0,
        background=True, stream=True)
    seen = []
    for event in stream:
        seen.append(event)
        if len(seen) == 4:
            break
    stream.close()
    assert seen[0].type == "response.created" and seen[0].response.background, seen[0]
    rest = list(client.responses.retrieve(
        seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number))
    events = seen + rest
    assert [event.sequence_number for event in events] == list(range(len(events))), events
    final = events[-1]
    assert final.type == f"response.{whole.status}" and final.response.background, final
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == final.response.output_text == whole.output_text, (text, final, whole)
    again = list(client.responses.retrieve(seen[0].response.id, stream=True))
    assert again == events, again


def check_responses_tools(client: OpenAI, model: str) -> None:
    """Function tools on the Responses API: a forced call comes back as a function_call item,
    whole and streamed (the client's own accumulator rebuilds it from the events), and its
    output goes back in as input for the answer."""
    weather = {"type": "function", "name": "weather", "description": "The weather in a city",
               "strict": True,
               "parameters": {"type": "object", "additionalProperties": False,
                              "required": ["city"],
                              "properties": {"city": {"type": "string", "maxLength": 24}}}}
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "name": "weather"}
    whole = client.responses.create(model=model, input=asked, tools=[weather],
                                    tool_choice=forced, max_output_tokens=60, temperature=0)
    calls = [item for item in whole.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "weather" and calls[0].call_id, whole
    assert set(json.loads(calls[0].arguments)) == {"city"}, whole
    assert whole.tools[0].name == "weather", whole.tools

    deltas = []
    with client.responses.stream(model=model, input=asked, tools=[weather], tool_choice=forced,
                                 max_output_tokens=60, temperature=0) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    [streamed] = [item for item in final.output if item.type == "function_call"]
    assert len(deltas) > 1 and "".join(deltas) == streamed.arguments == calls[0].arguments, \
        (deltas, final)

    # The call and its output go back in; the answer is text.
    follow = asked + [calls[0].model_dump(exclude_none=True),
                      {"type": "function_call_output", "call_id": calls[0].call_id,
                       "output": "18 degrees and sunny"}]
    answer = client.responses.create(model=model, input=follow, tools=[weather],
                                     tool_choice="none", max_output_tokens=24, temperature=0)
    assert answer.output[0].type == "message" and answer.output_text, answer

    try:
        client.responses.create(model=model, input=asked, tools=[weather],
                                tool_choice={"type": "function", "name": "news"})
        raise AssertionError("a call of a function not among the tools was accepted")
    except openai.BadRequestError as error:
        assert error.body["param"] == "tool_choice.name", error.body


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
