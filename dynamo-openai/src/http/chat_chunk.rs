//! The chunks of a streamed chat completion, written straight into the SSE body.
//!
//! Every chunk of a stream repeats its `id`, `object`, `created` and `model`; [`ChunkHead`]
//! renders them once per stream, and each chunk is then that text, its choice and its usage.
//! The bytes are those `serde_json` writes for the whole [`ChatCompletionChunk`] (the tests
//! below compare them for arbitrary text), without the per-chunk copies of the id and model
//! that building one costs.

#[cfg(test)]
use crate::protocol::ChatCompletionChunk;
use crate::protocol::{ChatChunkChoice, UsageBody};

/// `object` of every chunk.
const OBJECT: &str = "chat.completion.chunk";

/// The fields every chunk of one stream repeats, rendered once.
#[derive(Debug, Clone)]
pub(crate) struct ChunkHead {
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":`
    prefix: Vec<u8>,
}

impl ChunkHead {
    /// The head of the chunks of completion `id`, created at `created` (Unix seconds), by
    /// `model`.
    pub(crate) fn new(id: &str, created: u64, model: &str) -> Result<Self, serde_json::Error> {
        let mut prefix = Vec::with_capacity(64 + id.len() + model.len());
        prefix.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut prefix, id)?;
        prefix.extend_from_slice(b",\"object\":");
        serde_json::to_writer(&mut prefix, OBJECT)?;
        prefix.extend_from_slice(b",\"created\":");
        serde_json::to_writer(&mut prefix, &created)?;
        prefix.extend_from_slice(b",\"model\":");
        serde_json::to_writer(&mut prefix, model)?;
        prefix.extend_from_slice(b",\"choices\":");
        Ok(ChunkHead { prefix })
    }

    /// Append the chunk with `choice` (none: an empty `choices`, as the usage chunk has) and
    /// `usage`, as `serde_json` writes the [`ChatCompletionChunk`] of this head.
    pub(crate) fn write(
        &self,
        choice: Option<&ChatChunkChoice>,
        usage: Option<&UsageBody>,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        out.extend_from_slice(&self.prefix);
        match choice {
            Some(choice) => {
                out.push(b'[');
                serde_json::to_writer(&mut *out, choice)?;
                out.push(b']');
            }
            None => out.extend_from_slice(b"[]"),
        }
        // `usage` is left out when it is `None` (`skip_serializing_if`).
        if let Some(usage) = usage {
            out.extend_from_slice(b",\"usage\":");
            serde_json::to_writer(&mut *out, usage)?;
        }
        out.push(b'}');
        Ok(())
    }

    /// The [`ChatCompletionChunk`] these bytes stand for: what a client reads.
    #[cfg(test)]
    fn chunk(
        id: &str,
        created: u64,
        model: &str,
        choice: Option<ChatChunkChoice>,
        usage: Option<UsageBody>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: id.to_owned(),
            object: OBJECT.to_owned(),
            created,
            model: model.to_owned(),
            choices: choice.into_iter().collect(),
            usage,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::{
        ChatDelta, ChatLogProbs, ChatTokenLogProb, FunctionCallDelta, Role, ToolCallDelta,
        TopLogProb,
    };

    /// Text with what JSON must escape: quotes, backslashes, control characters, and
    /// characters outside ASCII (two, three and four bytes in UTF-8, and U+2028).
    fn awkward() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z \"\\\\/\u{0}-\u{1f}\u{7f}é€\u{2028}😀]{0,24}",
            any::<String>(),
        ]
    }

    fn delta() -> impl Strategy<Value = ChatDelta> {
        (
            any::<bool>(),
            proptest::option::of(awkward()),
            proptest::option::of(awkward()),
            proptest::option::of((any::<u32>(), awkward(), awkward())),
        )
            .prop_map(|(role, content, reasoning_content, call)| ChatDelta {
                role: role.then_some(Role::Assistant),
                content,
                reasoning_content,
                tool_calls: call.map(|(index, name, arguments)| {
                    vec![ToolCallDelta {
                        index,
                        id: Some(format!("call-{index}")),
                        kind: Some("function".to_owned()),
                        function: FunctionCallDelta {
                            name: Some(name),
                            arguments,
                        },
                    }]
                }),
            })
    }

    fn choice() -> impl Strategy<Value = ChatChunkChoice> {
        (
            any::<u32>(),
            delta(),
            proptest::option::of((awkward(), -100.0f32..0.0)),
            proptest::option::of(prop_oneof![
                Just("stop".to_owned()),
                Just("length".to_owned()),
                awkward()
            ]),
        )
            .prop_map(|(index, delta, scored, finish_reason)| ChatChunkChoice {
                index,
                delta,
                logprobs: scored.map(|(token, logprob)| ChatLogProbs {
                    content: Some(vec![ChatTokenLogProb {
                        bytes: Some(token.clone().into_bytes()),
                        token: token.clone(),
                        logprob,
                        top_logprobs: vec![TopLogProb {
                            bytes: None,
                            token,
                            logprob,
                        }],
                    }]),
                    refusal: None,
                }),
                finish_reason,
            })
    }

    fn usage() -> impl Strategy<Value = UsageBody> {
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
            |(prompt_tokens, completion_tokens, total_tokens, cached)| UsageBody {
                prompt_tokens,
                completion_tokens,
                total_tokens,
                prompt_tokens_details: cached.then_some(crate::protocol::PromptTokensDetails {
                    cached_tokens: prompt_tokens / 2,
                }),
            },
        )
    }

    proptest! {
        #[test]
        fn a_written_chunk_is_what_serde_json_writes_for_it(
            id in awkward(),
            created in any::<u64>(),
            model in awkward(),
            choice in proptest::option::of(choice()),
            usage in proptest::option::of(usage()),
        ) {
            let head = ChunkHead::new(&id, created, &model).expect("a head");
            let mut written = b"before".to_vec();
            head.write(choice.as_ref(), usage.as_ref(), &mut written).expect("written");
            let chunk = ChunkHead::chunk(&id, created, &model, choice, usage);
            let expected = serde_json::to_vec(&chunk).expect("serialised");
            prop_assert_eq!(&written[..6], b"before");
            prop_assert_eq!(
                String::from_utf8_lossy(&written[6..]),
                String::from_utf8_lossy(&expected)
            );
            // And it reads back as the same chunk.
            let read: ChatCompletionChunk =
                serde_json::from_slice(&written[6..]).expect("a chunk");
            prop_assert_eq!(read, chunk);
        }
    }

    #[test]
    fn a_plain_content_chunk_has_every_field_in_order() {
        let head = ChunkHead::new("chatcmpl-1", 7, "m").expect("a head");
        let choice = ChatChunkChoice {
            index: 0,
            delta: ChatDelta {
                content: Some(" \"tok\"\n".to_owned()),
                ..ChatDelta::default()
            },
            logprobs: None,
            finish_reason: None,
        };
        let mut out = Vec::new();
        head.write(Some(&choice), None, &mut out).expect("written");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":" \"tok\"\n"},"logprobs":null,"finish_reason":null}]}"#
        );
    }
}
