//! The crate's one `Error`, as a caller sees it: which variant each loading or preprocessing
//! failure gives, the path or key it names, and the library's error kept as the source.

use std::error::Error as _;
use std::path::PathBuf;

use dynamo_core::{BoxEngine, EchoEngine};
use dynamo_openai::{
    ChatTemplate, Decode, Error, GgufMetadata, IncrementalDecoder, ModelEntry, Tokenizer,
};

/// A file under the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "dynamo-openai-load-errors-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("the temporary directory is writable");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn missing_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dynamo-openai-load-errors-{}-missing-{name}",
        std::process::id()
    ))
}

/// GGUF metadata (version 3, no tensors) with string entries.
fn gguf(strings: &[(&str, &str)]) -> Vec<u8> {
    fn string(bytes: &mut Vec<u8>, text: &str) {
        bytes.extend((text.len() as u64).to_le_bytes());
        bytes.extend(text.as_bytes());
    }
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend((strings.len() as u64).to_le_bytes());
    for (key, value) in strings {
        string(&mut bytes, key);
        bytes.extend(8u32.to_le_bytes());
        string(&mut bytes, value);
    }
    bytes
}

fn entry_from(bytes: &[u8]) -> Result<ModelEntry, Error> {
    let metadata = GgufMetadata::read(&mut &bytes[..]).expect("valid metadata");
    ModelEntry::from_gguf("m", BoxEngine::new(EchoEngine::new()), &metadata)
}

#[test]
fn the_error_can_cross_threads_and_be_boxed() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Error>();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::tokenizer("x"));
    assert_eq!(boxed.to_string(), "tokenizer: x");
}

#[test]
fn a_missing_file_names_its_path() {
    let path = missing_path("tokenizer.json");
    let error = Tokenizer::from_file(&path).expect_err("no such file");
    let Error::Io {
        path: reported,
        source,
        ..
    } = &error
    else {
        panic!("an I/O error: {error:?}");
    };
    assert_eq!(reported, &path);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );

    let path = missing_path("model.gguf");
    let error = GgufMetadata::open(&path).expect_err("no such file");
    assert!(
        matches!(&error, Error::Io { path: reported, .. } if *reported == path),
        "{error:?}"
    );
}

#[test]
fn a_tokenizer_json_that_does_not_parse_is_a_tokenizer_error_with_a_source() {
    let file = TempFile::new("tokenizer.json", b"{ not json");
    let error = Tokenizer::from_file(&file.0).expect_err("not JSON");
    assert!(matches!(error, Error::Tokenizer { .. }), "{error:?}");
    assert!(error.to_string().starts_with("tokenizer: "), "{error}");
    assert!(error.source().is_some());
}

#[test]
fn gguf_that_ends_early_is_an_io_error_from_a_file_and_a_read_error_from_a_reader() {
    let mut truncated = gguf(&[("general.name", "tiny")]);
    truncated.truncate(truncated.len() - 2);

    let error = GgufMetadata::read(&mut truncated.as_slice()).expect_err("ends early");
    let Error::GgufRead { source, .. } = &error else {
        panic!("a read error: {error:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(
        error
            .to_string()
            .starts_with("cannot read the GGUF metadata: ")
    );

    let file = TempFile::new("truncated.gguf", &truncated);
    let error = GgufMetadata::open(&file.0).expect_err("ends early");
    assert!(
        matches!(&error, Error::Io { path, .. } if *path == file.0),
        "{error:?}"
    );
}

#[test]
fn other_files_are_not_gguf() {
    let error = GgufMetadata::read(&mut b"PK\x03\x04\x01\0\0\0".as_slice()).expect_err("a zip");
    assert!(
        matches!(
            error,
            Error::NotGguf {
                magic: 0x0403_4b50,
                version: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "not a GGUF file (magic 0x04034b50, version 1)"
    );
}

#[test]
fn a_model_without_a_usable_tokenizer_says_which_key_or_kind() {
    let error = entry_from(&gguf(&[("general.name", "tiny")])).expect_err("no tokenizer");
    assert!(
        matches!(&error, Error::GgufMissingKey { key, .. } if key == "tokenizer.ggml.model"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the GGUF metadata has no usable `tokenizer.ggml.model`"
    );

    let error = entry_from(&gguf(&[("tokenizer.ggml.model", "gpt2")])).expect_err("no tokens");
    assert!(
        matches!(&error, Error::GgufMissingKey { key, .. } if key == "tokenizer.ggml.tokens"),
        "{error:?}"
    );

    let error = entry_from(&gguf(&[("tokenizer.ggml.model", "llama")])).expect_err("SentencePiece");
    assert!(
        matches!(&error, Error::UnsupportedTokenizer { model, .. } if model == "llama"),
        "{error:?}"
    );
    assert!(error.to_string().contains("`llama`"), "{error}");
}

#[test]
fn chat_template_errors_keep_the_message_and_the_source() {
    let error = ChatTemplate::new("{% for %}").expect_err("a `for` without a target");
    let Error::Template { message, .. } = &error else {
        panic!("a template error: {error:?}");
    };
    assert_eq!(error.to_string(), format!("chat template: {message}"));
    assert!(error.source().is_some());

    let template = ChatTemplate::new("{{ raise_exception('only user messages') }}")
        .expect("the template compiles");
    let error = template
        .render(
            &[serde_json::json!({"role": "user", "content": "hi"})],
            None,
            true,
        )
        .expect_err("the template raises");
    assert!(
        matches!(&error, Error::Template { message, .. } if message.contains("only user messages")),
        "{error:?}"
    );
}

#[test]
fn a_decode_implementation_reports_its_own_failure() {
    struct Strict;
    impl Decode for Strict {
        fn decode_ids(&self, ids: &[u32]) -> Result<String, Error> {
            match ids.iter().find(|&&id| id > 127) {
                Some(id) => Err(Error::tokenizer(format!("id {id} is not ASCII"))),
                None => Ok(ids.iter().map(|&id| char::from(id as u8)).collect()),
            }
        }
    }
    let mut decoder = IncrementalDecoder::default();
    assert_eq!(
        decoder.push(&Strict, &[104, 105]).ok().as_deref(),
        Some("hi")
    );
    let error = decoder.push(&Strict, &[300]).expect_err("not ASCII");
    assert!(matches!(error, Error::Tokenizer { .. }), "{error:?}");
    assert_eq!(error.to_string(), "tokenizer: id 300 is not ASCII");
}
