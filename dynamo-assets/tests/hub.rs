//! `HubFile` against a small local stand-in for the Hugging Face Hub: a file is downloaded
//! once into the cache, then found there without the network; a missing file is an error.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dynamo_assets::{FetchError, HubFile, Progress};

const CONTENT: &[u8] = b"GGUF pretend model bytes";

/// Serves `GET /ORG/REPO/resolve/REVISION/model.gguf` as the Hub does (an etag, the commit, and
/// a `Content-Range` for ranged requests); 404 for anything else. Counts the requests.
fn fake_hub() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("bound");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().expect("a clone"));
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut range = None;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
                if let Some(value) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = byte_range(value.trim());
                }
            }
            let found = request_line.contains("/org/model/resolve/main/model.gguf ");
            let (status, body, extra) = match (found, range) {
                (false, _) => ("404 Not Found", &b"not found"[..], String::new()),
                (true, Some((first, last))) => {
                    let last = last.min(CONTENT.len() - 1);
                    (
                        "206 Partial Content",
                        &CONTENT[first..=last],
                        format!("Content-Range: bytes {first}-{last}/{}\r\n", CONTENT.len()),
                    )
                }
                (true, None) => ("200 OK", CONTENT, String::new()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: \"abc123\"\r\n\
                 X-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\n{extra}\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (format!("http://{address}"), requests)
}

/// `FIRST-LAST` or `FIRST-` of a `Range: bytes=` header.
fn byte_range(value: &str) -> Option<(usize, usize)> {
    let (first, last) = value.split_once('-')?;
    let last = if last.is_empty() {
        usize::MAX
    } else {
        last.parse().ok()?
    };
    Some((first.parse().ok()?, last))
}

fn temporary_cache(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("dynamo-hub-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

#[test]
fn a_hub_file_is_downloaded_once_then_read_from_the_cache() {
    let (endpoint, requests) = fake_hub();
    let cache = temporary_cache("once");
    let file = HubFile::parse("org/model/model.gguf").expect("a hub spec");
    let mut heard = Vec::new();
    let path = file
        .fetch_from_with_progress(&endpoint, cache.clone(), &mut |progress: Progress| {
            heard.push((progress.done, progress.total));
        })
        .expect("downloaded");
    assert_eq!(std::fs::read(&path).expect("readable"), CONTENT);
    let length = CONTENT.len() as u64;
    assert_eq!(heard.first(), Some(&(0, Some(length))), "told of the start");
    assert_eq!(
        heard.last(),
        Some(&(length, Some(length))),
        "told of the end"
    );
    assert!(path.starts_with(&cache));
    let served = requests.load(Ordering::SeqCst);
    assert!(
        served >= 2,
        "a ranged request for the metadata, then the file"
    );
    heard.clear();
    let again = file
        .fetch_from_with_progress(&endpoint, cache.clone(), &mut |progress| {
            heard.push((progress.done, progress.total));
        })
        .expect("cached");
    assert_eq!(again, path);
    assert!(heard.is_empty(), "a cached file downloads nothing");
    assert_eq!(
        requests.load(Ordering::SeqCst),
        served,
        "the cache answered"
    );
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn a_missing_hub_file_is_a_download_error() {
    let (endpoint, _) = fake_hub();
    let cache = temporary_cache("missing");
    let file = HubFile::parse("org/model/other.gguf").expect("a hub spec");
    let error = file
        .fetch_from(&endpoint, cache.clone())
        .expect_err("no such file");
    assert!(matches!(error, FetchError::Download { .. }), "{error}");
    let _ = std::fs::remove_dir_all(cache);
}
