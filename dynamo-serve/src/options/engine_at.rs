//! `--engine-at KIND=URL[,events=ADDR][,replay=ADDR][,model=NAME][,id=N][,format=FIELD][,dp=N]`:
//! an engine server the frontend routes to directly, beside the workers discovery reports. A
//! vLLM server with `--data-parallel-size N` is N workers with `dp=N`, one a data-parallel
//! engine (ids `ID/0` to `ID/N-1`, events from the configured port plus the rank). A
//! TensorRT-LLM server's events are polled from its own URL: `events=poll`, or `events=poll:MS`
//! to poll every `MS` milliseconds. An OpenAI-compatible server takes output formats only with
//! `format=response_format` (OpenAI's field) or `format=json_schema` (llama.cpp's); without
//! it a request with one is refused.

use std::str::FromStr;
use std::time::Duration;

use dynamo_upstream::FormatField;

/// The most data-parallel engines one `--engine-at` names (vLLM's ranks take consecutive
/// ports, and a deployment with more runs several servers).
const MAX_DATA_PARALLEL: u32 = 1024;

/// How often a TensorRT-LLM server's KV events are polled without `events=poll:MS`.
const DEFAULT_POLL: Duration = Duration::from_millis(100);

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
    /// Its ZMQ KV-event publisher (vLLM, SGLang), or `poll[:MS]` (TensorRT-LLM).
    pub(crate) events: Option<String>,
    /// How often its KV events are polled (TensorRT-LLM with `events=poll`).
    pub(crate) poll: Option<Duration>,
    /// Its ZMQ replay socket.
    pub(crate) replay: Option<String>,
    /// The name it serves its model under (`None`: the frontend's `--name`).
    pub(crate) model: Option<String>,
    /// Its worker id in the router (`None`: numbered by position).
    pub(crate) id: Option<u64>,
    /// How an OpenAI-compatible server takes an output format (`format=`; refused without).
    pub(crate) format: FormatField,
    /// The data-parallel engines of a vLLM server, each routed to as a worker (`dp=`; `None`:
    /// the server as one worker, its own balancer choosing the engine).
    pub(crate) data_parallel_size: Option<u32>,
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
            poll: None,
            replay: None,
            model: None,
            id: None,
            format: FormatField::Refused,
            data_parallel_size: None,
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
                "dp" => {
                    if engine.kind != UpstreamKind::Vllm {
                        return Err(format!(
                            "dp= is for vllm: a {} server's data-parallel engines are not \
                             addressed one by one here",
                            engine.kind.describe()
                        ));
                    }
                    let size = value
                        .parse()
                        .ok()
                        .filter(|size| (1..=MAX_DATA_PARALLEL).contains(size))
                        .ok_or_else(|| {
                            format!(
                                "dp={value:?}: the server's --data-parallel-size, 1 to \
                                 {MAX_DATA_PARALLEL}"
                            )
                        })?;
                    engine.data_parallel_size = Some(size);
                }
                "format" => {
                    if engine.kind != UpstreamKind::Openai {
                        return Err(format!(
                            "format= is for openai: a {} server's output-format field is known",
                            engine.kind.describe()
                        ));
                    }
                    engine.format = match value {
                        "response_format" => FormatField::OpenAi,
                        "json_schema" => FormatField::JsonSchemaField,
                        other => {
                            return Err(format!(
                                "format={other:?}: the field the server reads an output format \
                                 from is response_format (OpenAI's) or json_schema (llama.cpp's)"
                            ));
                        }
                    };
                }
                other => {
                    return Err(format!(
                        "{other:?} is not an --engine-at setting (events, replay, model, id, format, dp)"
                    ));
                }
            }
        }
        ranks_apart(&engine)?;
        match (engine.kind, engine.events.as_deref()) {
            (UpstreamKind::Openai, Some(_)) => {
                return Err(
                    "events= is for vllm, sglang and trtllm: an OpenAI-compatible server publishes no KV events"
                        .to_owned(),
                );
            }
            (UpstreamKind::Trtllm, Some(events)) => {
                engine.poll = Some(poll_interval(events)?);
                if engine.replay.is_some() {
                    return Err(
                        "replay= is for vllm and sglang: a TensorRT-LLM server's events are polled"
                            .to_owned(),
                    );
                }
            }
            (UpstreamKind::Vllm | UpstreamKind::Sglang, Some(events))
                if events == "poll" || events.starts_with("poll:") =>
            {
                return Err(format!(
                    "events=poll is for trtllm: a {} server publishes its KV events on a ZMQ socket (events=tcp://HOST:PORT)",
                    engine.kind.describe()
                ));
            }
            _ => {}
        }
        Ok(engine)
    }
}

/// Refuse a data-parallel server's `events=` and `replay=` TCP ports closer than its size:
/// vLLM adds the rank to both, so rank `r`'s publisher would take another rank's replay port.
fn ranks_apart(engine: &EngineAt) -> Result<(), String> {
    let (Some(size), Some(events), Some(replay)) = (
        engine.data_parallel_size,
        engine.events.as_deref(),
        engine.replay.as_deref(),
    ) else {
        return Ok(());
    };
    let port = |endpoint: &str| -> Option<(String, u32)> {
        let (host, port) = endpoint.strip_prefix("tcp://")?.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    };
    match (port(events), port(replay)) {
        (Some((host, first)), Some((replay_host, replay_port)))
            if host == replay_host && first.abs_diff(replay_port) < size =>
        {
            Err(format!(
                "events={events} and replay={replay} with dp={size}: vLLM adds each rank to \
                 both ports, so the ranks' sockets would collide; put the replay port at least \
                 {size} away (and set the server's replay_endpoint to it)"
            ))
        }
        _ => Ok(()),
    }
}

/// `poll` or `poll:MS`: how often a TensorRT-LLM server's events are polled.
fn poll_interval(events: &str) -> Result<Duration, String> {
    let wrong = || {
        format!(
            "events={events:?}: a TensorRT-LLM server's KV events are polled from its URL: events=poll or events=poll:MS (milliseconds, at least 10)"
        )
    };
    match events.strip_prefix("poll") {
        Some("") => Ok(DEFAULT_POLL),
        Some(rest) => {
            let millis: u64 = rest
                .strip_prefix(':')
                .and_then(|ms| ms.parse().ok())
                .filter(|&ms| ms >= 10)
                .ok_or_else(wrong)?;
            Ok(Duration::from_millis(millis))
        }
        None => Err(wrong()),
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
        assert_eq!(engine.data_parallel_size, None);
        let engine: EngineAt = "vllm=http://h:8000,dp=4".parse().unwrap();
        assert_eq!(engine.data_parallel_size, Some(4));
        // Replay ports as many apart as the ranks, or one server's alone: no collision.
        for apart in [
            "vllm=http://h,events=tcp://h:5557,replay=tcp://h:5561,dp=4",
            "vllm=http://h,events=tcp://h:5557,replay=tcp://h:5558",
        ] {
            assert!(apart.parse::<EngineAt>().is_ok(), "{apart}");
        }
        for (bad, says) in [
            ("http://h:8000", "KIND=URL"),
            ("tgi=http://h:8000", "engine kind"),
            ("vllm=https://h", "http://"),
            ("vllm=http://h,colour=blue", "colour"),
            ("openai=http://h,events=tcp://h:1", "publishes no KV events"),
            (
                "trtllm=http://h,events=tcp://h:1",
                "events=poll or events=poll:MS",
            ),
            ("trtllm=http://h,events=poll:5", "at least 10"),
            ("trtllm=http://h,events=poll:x", "events=poll:MS"),
            ("trtllm=http://h,events=poll,replay=tcp://h:2", "polled"),
            ("vllm=http://h,events=poll", "events=poll is for trtllm"),
            ("vllm=http://h,format=json_schema", "format= is for openai"),
            ("sglang=http://h,dp=2", "dp= is for vllm"),
            ("vllm=http://h,dp=0", "1 to 1024"),
            ("vllm=http://h,dp=two", "--data-parallel-size"),
            (
                "vllm=http://h,events=tcp://h:5557,replay=tcp://h:5558,dp=2",
                "at least 2 away",
            ),
            (
                "openai=http://h,format=xml",
                "response_format (OpenAI's) or json_schema",
            ),
        ] {
            let error = bad.parse::<EngineAt>().unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn an_openai_server_takes_output_formats_only_in_the_field_named() {
        let format = |setting: &str| {
            format!("openai=http://h:8080{setting}")
                .parse::<EngineAt>()
                .map(|engine| engine.format)
        };
        assert_eq!(format(""), Ok(FormatField::Refused));
        assert_eq!(format(",format=response_format"), Ok(FormatField::OpenAi));
        assert_eq!(
            format(",format=json_schema"),
            Ok(FormatField::JsonSchemaField)
        );
    }

    #[test]
    fn trtllm_events_are_polled_every_100_ms_or_as_told() {
        let engine: EngineAt = "trtllm=http://h:8000,events=poll".parse().unwrap();
        assert_eq!(engine.poll, Some(Duration::from_millis(100)));
        let engine: EngineAt = "trtllm=http://h:8000,events=poll:250".parse().unwrap();
        assert_eq!(engine.poll, Some(Duration::from_millis(250)));
        let engine: EngineAt = "trtllm=http://h:8000".parse().unwrap();
        assert_eq!((engine.events, engine.poll), (None, None));
        let engine: EngineAt = "vllm=http://h:8000,events=tcp://h:5557".parse().unwrap();
        assert_eq!(engine.poll, None);
    }
}
