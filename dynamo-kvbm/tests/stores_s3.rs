//! The object-store tier on S3: a real S3-compatible HTTP server (`moto_server`, from the PyPI
//! package `moto[server]`, which CI installs), started here on a free loopback port, with the
//! shared suite and recovery across a reopen.
//!
//! The server is `dynamo_transport::local::LocalS3`: `DYNAMO_S3_SERVER`, else CI's virtual
//! environment's `moto_server`, else `moto_server` on `PATH`. Without it the test fails and says
//! how to install it, as the transport's NATS and etcd tests do.

mod common;

use std::sync::Arc;

use common::{CAPACITY, block, conformance};
use dynamo_core::SequenceHash;
use dynamo_kvbm::object_store::aws::AmazonS3Builder;
use dynamo_kvbm::{BlockStore, ObjectConfig, ObjectStoreBlocks};
use dynamo_transport::local::LocalS3;

const BUCKET: &str = "kvbm";

/// A client of `server`'s bucket.
fn backend(server: &LocalS3) -> Arc<dyn dynamo_kvbm::object_store::ObjectStore> {
    let s3 = AmazonS3Builder::new()
        .with_endpoint(server.endpoint())
        .with_allow_http(true)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("an S3 client");
    Arc::new(s3)
}

#[test]
fn object_store_blocks_on_s3_behave_like_a_block_store_and_recover() {
    let server = LocalS3::start(BUCKET).expect(
        "an S3 server: install one with `pip install 'moto[server]'` (CI puts it in \
         ~/.cache/dynamo-ci/venv), or point DYNAMO_S3_SERVER at a moto_server",
    );
    let config = |size| ObjectConfig::new(format!("kv/{size}"), size, CAPACITY).concurrency(4);
    for size in [1, 1000, 70_000] {
        conformance(&ObjectStoreBlocks::open(backend(&server), config(size)).expect("a store"));
    }

    let store = ObjectStoreBlocks::open(backend(&server), config(64)).expect("a store");
    store
        .put_many(&[
            (SequenceHash(1), &block(1, 64)),
            (SequenceHash(2), &block(2, 64)),
        ])
        .expect("put_many");
    drop(store);
    let reopened = ObjectStoreBlocks::open(backend(&server), config(64)).expect("a store");
    assert_eq!(reopened.len(), 2);
    let mut into = vec![0; 64];
    assert!(reopened.get(SequenceHash(2), &mut into).expect("get"));
    assert_eq!(into, block(2, 64));
}
