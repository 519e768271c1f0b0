//! The OpenAPI 3.1 document of the gateway, served at `/openapi.json`.

use axum::Json;
use serde_json::{Value, json};

/// The OpenAPI 3.1 document describing every route, for clients, validators and fuzzers
/// (`dynamo-serve openapi` writes it without starting a server).
///
/// ```
/// let document = dynamo_openai::openapi_document();
/// assert_eq!(document["openapi"], "3.1.0");
/// assert!(document["paths"]["/v1/chat/completions"]["post"].is_object());
/// ```
pub fn openapi_document() -> Value {
    let error = json!({ "$ref": "#/components/responses/Error" });
    let errors = json!({
        "400": error, "404": error, "413": error, "503": error, "500": error,
    });
    let post = |summary: &str, schema: &str, answer: &str, chunk: &str| {
        let mut responses = errors.clone();
        responses["200"] = json!({
            "description": "The answer; with `stream: true`, server-sent events of chunks ending with `data: [DONE]`.",
            "content": {
                "application/json": { "schema": { "$ref": format!("#/components/schemas/{answer}") } },
                "text/event-stream": { "schema": { "$ref": format!("#/components/schemas/{chunk}") } },
            },
        });
        json!({ "post": {
            "summary": summary,
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{schema}") } } } },
            "responses": responses,
        } })
    };
    let probe = |summary: &str| {
        json!({ "get": { "summary": summary, "responses": {
        "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } },
        "503": error,
    } } })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dynamo OpenAI-compatible gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "paths": {
            "/v1/chat/completions": post("Chat completion", "ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk"),
            "/v1/completions": post("Text completion", "CompletionRequest", "Completion", "CompletionChunk"),
            "/v1/models": { "get": { "summary": "The served models", "responses": {
                "200": { "description": "The models", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/ModelList" } } } } } } },
            "/health": probe("Healthy when at least one model is served"),
            "/live": probe("The process answers"),
            "/ready": probe("Ready for requests"),
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": {
                "200": { "description": "Prometheus text format", "content": { "text/plain": { "schema": { "type": "string" } } } },
                "404": error } } },
            "/openapi.json": { "get": { "summary": "This document", "responses": {
                "200": { "description": "OpenAPI 3.1", "content": { "application/json": { "schema": { "type": "object" } } } } } } },
        },
        "components": {
            "responses": { "Error": { "description": "An OpenAI error", "content": { "application/json": {
                "schema": { "$ref": "#/components/schemas/Error" } } } } },
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let sampling = json!({
        "temperature": { "type": "number", "minimum": 0, "maximum": 2 },
        "top_p": { "type": "number", "exclusiveMinimum": 0, "maximum": 1 },
        "top_k": { "type": "integer" },
        "min_p": { "type": "number", "minimum": 0, "maximum": 1 },
        "seed": { "type": "integer", "minimum": 0 },
        "presence_penalty": { "type": "number", "minimum": -2, "maximum": 2 },
        "frequency_penalty": { "type": "number", "minimum": -2, "maximum": 2 },
        "repetition_penalty": { "type": "number", "exclusiveMinimum": 0 },
        "stop": { "oneOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" }, "maxItems": 4 } ] },
        "stop_token_ids": { "type": "array", "items": { "type": "integer", "minimum": 0 } },
        "min_tokens": { "type": "integer", "minimum": 0 },
        "ignore_eos": { "type": "boolean" },
        "n": { "type": "integer", "const": 1 },
        "user": { "type": "string" },
        "stream": { "type": "boolean" },
        "stream_options": { "type": "object", "properties": { "include_usage": { "type": "boolean" } } },
    });
    let with = |mut base: Value, extra: Value| {
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        base
    };
    let usage = json!({ "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {
        "prompt_tokens": { "type": "integer" }, "completion_tokens": { "type": "integer" }, "total_tokens": { "type": "integer" },
        "prompt_tokens_details": { "type": "object", "properties": { "cached_tokens": { "type": "integer" } } } } });
    let message = json!({ "type": "object", "required": ["role"], "properties": {
        "role": { "enum": ["system", "developer", "user", "assistant", "tool"] },
        "content": { "oneOf": [ { "type": "string" }, { "type": "null" }, { "type": "array", "items": {
            "type": "object", "required": ["type"], "properties": { "type": { "const": "text" }, "text": { "type": "string" } } } } ] },
        "name": { "type": "string" }, "tool_call_id": { "type": "string" },
        "tool_calls": { "type": "array", "items": { "$ref": "#/components/schemas/ToolCall" } } } });
    json!({
        "ChatCompletionRequest": { "type": "object", "required": ["model", "messages"], "properties": with(sampling.clone(), json!({
            "model": { "type": "string" },
            "messages": { "type": "array", "minItems": 1, "items": message },
            "max_tokens": { "type": "integer", "minimum": 1 },
            "max_completion_tokens": { "type": "integer", "minimum": 1 },
            "tools": { "type": "array", "items": { "type": "object", "required": ["type", "function"], "properties": {
                "type": { "const": "function" }, "function": { "type": "object", "required": ["name"], "properties": {
                    "name": { "type": "string" }, "description": { "type": "string" }, "parameters": { "type": "object" } } } } } },
            "tool_choice": { "enum": ["auto", "none"] },
            "parallel_tool_calls": { "type": "boolean" },
        })) },
        "CompletionRequest": { "type": "object", "required": ["model", "prompt"], "properties": with(sampling, json!({
            "model": { "type": "string" },
            "prompt": { "oneOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 },
                { "type": "array", "items": { "type": "integer", "minimum": 0 }, "minItems": 1 },
                { "type": "array", "items": { "type": "array", "items": { "type": "integer", "minimum": 0 } }, "minItems": 1 } ] },
            "max_tokens": { "type": "integer", "minimum": 1 },
            "echo": { "type": "boolean" },
        })) },
        "ToolCall": { "type": "object", "required": ["id", "type", "function"], "properties": {
            "id": { "type": "string" }, "type": { "const": "function" }, "function": { "type": "object",
            "required": ["name", "arguments"], "properties": { "name": { "type": "string" }, "arguments": { "type": "string" } } } } },
        "ChatCompletion": { "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
            "id": { "type": "string" }, "object": { "const": "chat.completion" }, "created": { "type": "integer" },
            "model": { "type": "string" }, "usage": usage.clone(),
            "choices": { "type": "array", "items": { "type": "object", "properties": {
                "index": { "type": "integer" }, "finish_reason": { "enum": ["stop", "length", "tool_calls", "cancelled", null] },
                "message": { "type": "object", "properties": { "role": { "const": "assistant" },
                    "content": { "type": ["string", "null"] }, "reasoning_content": { "type": "string" },
                    "tool_calls": { "type": "array", "items": { "$ref": "#/components/schemas/ToolCall" } } } } } } } } },
        "ChatCompletionChunk": { "type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
            "id": { "type": "string" }, "object": { "const": "chat.completion.chunk" }, "created": { "type": "integer" },
            "model": { "type": "string" }, "usage": usage.clone(),
            "choices": { "type": "array", "items": { "type": "object", "properties": {
                "index": { "type": "integer" }, "finish_reason": { "type": ["string", "null"] },
                "delta": { "type": "object" } } } } } },
        "Completion": { "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
            "id": { "type": "string" }, "object": { "const": "text_completion" }, "created": { "type": "integer" },
            "model": { "type": "string" }, "usage": usage.clone(),
            "choices": { "type": "array", "items": { "$ref": "#/components/schemas/CompletionChoice" } } } },
        "CompletionChunk": { "type": "object", "required": ["id", "object", "created", "model", "choices"], "properties": {
            "id": { "type": "string" }, "object": { "const": "text_completion" }, "created": { "type": "integer" },
            "model": { "type": "string" }, "usage": usage,
            "choices": { "type": "array", "items": { "$ref": "#/components/schemas/CompletionChoice" } } } },
        "CompletionChoice": { "type": "object", "required": ["index", "text"], "properties": {
            "index": { "type": "integer" }, "text": { "type": "string" }, "finish_reason": { "type": ["string", "null"] } } },
        "ModelList": { "type": "object", "required": ["object", "data"], "properties": {
            "object": { "const": "list" }, "data": { "type": "array", "items": { "type": "object",
                "required": ["id", "object", "created", "owned_by"], "properties": {
                "id": { "type": "string" }, "object": { "const": "model" }, "created": { "type": "integer" },
                "owned_by": { "type": "string" } } } } } },
        "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object",
            "required": ["message", "type"], "properties": {
            "message": { "type": "string" }, "type": { "type": "string" },
            "param": { "type": ["string", "null"] }, "code": { "type": ["string", "null"] } } } } },
    })
}

pub(crate) async fn serve() -> Json<Value> {
    Json(openapi_document())
}
