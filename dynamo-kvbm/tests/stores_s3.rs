//! The object-store tier on S3: a real S3-compatible HTTP server (`moto_server`, from the PyPI
//! package `moto[server]`, which CI installs), started here on a free loopback port, with the
//! shared suite and recovery across a reopen.
//!
//! The server is found at `DYNAMO_S3_SERVER`, else in CI's virtual environment
//! (`~/.cache/dynamo-ci/venv/bin/moto_server`), else as `moto_server` on `PATH`. Without it the test fails
//! and says how to install it, as the transport's NATS and etcd tests do.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CAPACITY, block, conformance};
use dynamo_core::SequenceHash;
use dynamo_kvbm::object_store::aws::AmazonS3Builder;
use dynamo_kvbm::{BlockStore, ObjectConfig, ObjectStoreBlocks};

const BUCKET: &str = "kvbm";

/// A `moto_server` on a loopback port, killed on drop.
struct LocalS3 {
    child: Child,
    port: u16,
}

impl LocalS3 {
    fn program() -> PathBuf {
        if let Some(path) = std::env::var_os("DYNAMO_S3_SERVER") {
            return path.into();
        }
        let in_venv = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/dynamo-ci/venv/bin/moto_server"))
            .filter(|candidate| candidate.is_file());
        let on_path = || {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
                .map(|dir| dir.join("moto_server"))
                .find(|candidate| candidate.is_file())
        };
        in_venv.or_else(on_path).unwrap_or_else(|| {
            panic!(
                "no S3 server: install one with `pip install 'moto[server]'` (CI puts it in \
                 ~/.cache/dynamo-ci/venv), or point DYNAMO_S3_SERVER at a moto_server"
            )
        })
    }

    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let program = Self::program();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
        let mut server = LocalS3 { child, port };
        let started = Instant::now();
        // A connection to a free port can connect to itself (TCP simultaneous open): only one
        // whose two ends differ reaches the server.
        let listening = || {
            TcpStream::connect(("127.0.0.1", port))
                .is_ok_and(|stream| stream.local_addr().is_ok_and(|local| local.port() != port))
        };
        while !listening() {
            let exited = server.child.try_wait().ok().flatten();
            assert!(exited.is_none(), "{} exited: {exited:?}", program.display());
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "S3 server not listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server.create_bucket();
        server
    }

    /// `PUT /{bucket}`: the server takes unsigned requests, and `object_store` makes no buckets.
    fn create_bucket(&self) {
        let mut socket = TcpStream::connect(("127.0.0.1", self.port)).expect("connected");
        write!(
            socket,
            "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("request sent");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).expect("an answer");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "bucket not made: {answer}"
        );
    }

    fn backend(&self) -> Arc<dyn dynamo_kvbm::object_store::ObjectStore> {
        let s3 = AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("an S3 client");
        Arc::new(s3)
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn object_store_blocks_on_s3_behave_like_a_block_store_and_recover() {
    let server = LocalS3::start();
    let config = |size| ObjectConfig::new(format!("kv/{size}"), size, CAPACITY).concurrency(4);
    for size in [1, 1000, 70_000] {
        conformance(&ObjectStoreBlocks::open(server.backend(), config(size)).expect("a store"));
    }

    let store = ObjectStoreBlocks::open(server.backend(), config(64)).expect("a store");
    store
        .put_many(&[
            (SequenceHash(1), &block(1, 64)),
            (SequenceHash(2), &block(2, 64)),
        ])
        .expect("put_many");
    drop(store);
    let reopened = ObjectStoreBlocks::open(server.backend(), config(64)).expect("a store");
    assert_eq!(reopened.len(), 2);
    let mut into = vec![0; 64];
    assert!(reopened.get(SequenceHash(2), &mut into).expect("get"));
    assert_eq!(into, block(2, 64));
}
