//! `--engine-at KIND=URL[,events=ADDR][,replay=ADDR][,model=NAME][,id=N]`: an engine server
//! the frontend routes to directly, beside the workers discovery reports.

use std::str::FromStr;

/// Which adapter speaks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamKind {
    /// vLLM's OpenAI-compatible server (dynamo-vllm).
    Vllm,
    /// SGLang's native `/generate` (dynamo-sglang).
    Sglang,
    /// trtllm-serve's OpenAI-compatible server (dynamo-trtllm).
    Trtllm,
    /// Any OpenAI-compatible `/v1/completions`; its text is tokenized by the gateway
    /// (dynamo-upstream).
    Openai,
}

impl UpstreamKind {
    /// How the kind is called in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            UpstreamKind::Vllm => "vLLM",
            UpstreamKind::Sglang => "SGLang",
            UpstreamKind::Trtllm => "TensorRT-LLM",
            UpstreamKind::Openai => "OpenAI-compatible",
        }
    }
}

/// One `--engine-at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EngineAt {
    pub(crate) kind: UpstreamKind,
    /// The server's base URL.
    pub(crate) url: String,
    /// Its ZMQ KV-event publisher.
    pub(crate) events: Option<String>,
    /// Its ZMQ replay socket.
    pub(crate) replay: Option<String>,
    /// The name it serves its model under (`None`: the frontend's `--name`).
    pub(crate) model: Option<String>,
    /// Its worker id in the router (`None`: numbered by position).
    pub(crate) id: Option<u64>,
}

impl FromStr for EngineAt {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let mut parts = value.split(',');
        let first = parts.next().unwrap_or_default();
        let Some((kind, url)) = first.split_once('=') else {
            return Err(format!(
                "{first:?} is not KIND=URL (for example vllm=http://10.0.0.7:8000)"
            ));
        };
        let kind = match kind {
            "vllm" => UpstreamKind::Vllm,
            "sglang" => UpstreamKind::Sglang,
            "trtllm" => UpstreamKind::Trtllm,
            "openai" => UpstreamKind::Openai,
            other => {
                return Err(format!(
                    "{other:?} is not an engine kind (vllm, sglang, trtllm, openai)"
                ));
            }
        };
        if !url.starts_with("http://") {
            return Err(format!("{url:?} is not an http:// URL"));
        }
        let mut engine = EngineAt {
            kind,
            url: url.to_owned(),
            events: None,
            replay: None,
            model: None,
            id: None,
        };
        for part in parts.filter(|part| !part.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            match key {
                "events" => engine.events = Some(value.to_owned()),
                "replay" => engine.replay = Some(value.to_owned()),
                "model" => engine.model = Some(value.to_owned()),
                "id" => {
                    let id = value
                        .parse()
                        .map_err(|_| format!("{value:?} is not a worker id"))?;
                    engine.id = Some(id);
                }
                other => {
                    return Err(format!(
                        "{other:?} is not an --engine-at setting (events, replay, model, id)"
                    ));
                }
            }
        }
        if matches!(engine.kind, UpstreamKind::Openai | UpstreamKind::Trtllm)
            && engine.events.is_some()
        {
            return Err(format!(
                "events= is for vllm and sglang: a {} server publishes no ZMQ KV events",
                engine.kind.describe()
            ));
        }
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_mistakes_are_named() {
        let engine: EngineAt =
            "vllm=http://h:8000,events=tcp://h:5557,replay=tcp://h:5558,model=m,id=9"
                .parse()
                .unwrap();
        assert_eq!(engine.kind, UpstreamKind::Vllm);
        assert_eq!(engine.url, "http://h:8000");
        assert_eq!(engine.events.as_deref(), Some("tcp://h:5557"));
        assert_eq!(engine.replay.as_deref(), Some("tcp://h:5558"));
        assert_eq!((engine.model.as_deref(), engine.id), (Some("m"), Some(9)));
        for (bad, says) in [
            ("http://h:8000", "KIND=URL"),
            ("tgi=http://h:8000", "engine kind"),
            ("vllm=https://h", "http://"),
            ("vllm=http://h,colour=blue", "colour"),
            ("openai=http://h,events=tcp://h:1", "no ZMQ KV events"),
            ("trtllm=http://h,events=tcp://h:1", "no ZMQ KV events"),
        ] {
            let error = bad.parse::<EngineAt>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
