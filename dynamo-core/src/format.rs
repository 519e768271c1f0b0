//! Output formats: a shape the answer must have, enforced while sampling.

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A format the generated text must follow, enforced token by token while sampling (a grammar
/// engine masks every token that would leave the format).
///
/// It travels with the [`GenerateRequest`](crate::GenerateRequest) as data (the schema as JSON
/// text), so that it crosses the request plane like every other option. An engine that cannot
/// enforce it refuses the request with [`Error::InvalidRequest`] (see
/// [`OutputFormat::unsupported`]) rather than ignore it.
///
/// ```
/// use dynamo_core::{GenerateRequest, OutputFormat};
///
/// let mut request = GenerateRequest::new("r1", "smollm2", vec![1, 2, 3]);
/// request.format = Some(OutputFormat::JsonSchema {
///     schema: r#"{"type": "object", "properties": {"city": {"type": "string"}}}"#.into(),
/// });
/// let json = serde_json::to_string(&request)?;
/// assert!(json.contains(r#""format":{"type":"json_schema""#));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputFormat {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON text valid against a JSON schema.
    JsonSchema {
        /// The schema, as JSON text.
        schema: String,
    },
}

impl OutputFormat {
    /// The error of an engine that cannot enforce output formats.
    pub fn unsupported(engine: &str) -> Error {
        Error::invalid_request(format!(
            "response_format: the {engine} engine cannot enforce output formats"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EchoEngine, EngineExt, ErrorClass, GenerateRequest};

    #[test]
    fn round_trips_through_json_and_is_absent_by_default() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2]);
        let plain = serde_json::to_string(&request).unwrap();
        assert!(!plain.contains("format"), "{plain}");
        let schema = r#"{"type":"object"}"#.to_owned();
        request.format = Some(OutputFormat::JsonSchema { schema });
        let back: GenerateRequest =
            serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(back.format, request.format);
        let object: OutputFormat = serde_json::from_str(r#"{"type":"json_object"}"#).unwrap();
        assert_eq!(object, OutputFormat::JsonObject);
    }

    #[tokio::test]
    async fn the_echo_engine_refuses_a_format() {
        let mut request = GenerateRequest::new("r", "m", vec![1, 2]);
        request.format = Some(OutputFormat::JsonObject);
        let error = EchoEngine::new().generate_all(request).await.unwrap_err();
        assert_eq!(error.class(), ErrorClass::InvalidRequest);
        assert!(error.to_string().contains("response_format"), "{error}");
    }
}
