//! `--response-store URL`: where the gateway keeps stored responses when several frontends
//! share them (a conversation's turns may then land on any of them): a folder every frontend
//! mounts (`file:///…`), or an S3 bucket (`s3://bucket/prefix`, with the `s3` feature; S3's
//! usual `AWS_*` variables give the credentials, the region and, for an S3-compatible server,
//! `AWS_ENDPOINT` and `AWS_ALLOW_HTTP`). Without it each frontend keeps its own in memory.

use std::sync::Arc;

use dynamo_openai::object_store::path::Path;
use dynamo_openai::object_store::{self, ObjectStore};
use url::Url;

/// The schemes this build can store responses at.
const SCHEMES: &[&str] = if cfg!(feature = "s3") {
    &["file", "s3"]
} else {
    &["file"]
};

/// A `--response-store` URL, checked: a scheme this build knows and a path.
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|error| format!("not a URL: {error}"))?;
    if !SCHEMES.contains(&url.scheme()) {
        let s3 = if cfg!(feature = "s3") {
            ""
        } else {
            " (s3:// needs a build with the `s3` feature)"
        };
        return Err(format!(
            "responses are stored at {} URLs{s3}, not {}://",
            SCHEMES.join(":// or "),
            url.scheme()
        ));
    }
    if url.scheme() == "file" && url.path().trim_matches('/').is_empty() {
        return Err("a file:// store needs a folder, not the root".to_owned());
    }
    Ok(url)
}

/// The object store at `url` and the prefix its responses go under; S3's settings from the
/// environment's `AWS_*` variables.
pub(crate) fn open(url: &Url) -> Result<(Arc<dyn ObjectStore>, Path), object_store::Error> {
    let settings = std::env::vars().filter(|(name, _)| name.starts_with("AWS_"));
    let (store, prefix) = object_store::parse_url_opts(url, settings)?;
    Ok((Arc::from(store), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_a_scheme_this_build_knows_and_a_folder() {
        assert!(parse_url("file:///srv/responses").is_ok());
        for (text, said) in [
            ("srv/responses", "not a URL"),
            ("gs://bucket/responses", "not gs://"),
            ("file:///", "not the root"),
        ] {
            let error = parse_url(text).expect_err(text);
            assert!(error.contains(said), "{text}: {error}");
        }
        assert_eq!(
            parse_url("s3://bucket/responses").is_ok(),
            cfg!(feature = "s3")
        );
    }

    #[tokio::test]
    async fn a_folder_store_keeps_what_is_put_under_the_urls_path() {
        use object_store::{ObjectStoreExt, PutPayload};

        let folder = tempfile::tempdir().expect("a folder");
        let url = Url::from_directory_path(folder.path()).expect("a file URL");
        let (store, prefix) = open(&url).expect("a store");
        let key = prefix.clone().join("a.json");
        store
            .put(&key, PutPayload::from_static(b"{}"))
            .await
            .expect("written");
        assert!(folder.path().join("a.json").is_file());
    }
}
