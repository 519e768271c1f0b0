//! The `nixl` feature: asking whether NIXL is loaded never aborts, and says no where the
//! library is nowhere on the loader's path.

use std::path::{Path, PathBuf};

/// Whether `libnixl_capi.so` is in a directory the dynamic loader would search first:
/// `LD_LIBRARY_PATH`, NIXL's default prefix, and the usual library directories.
fn nixl_installed() -> bool {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    for dir in [
        "/opt/nvidia/nvda_nixl/lib",
        "/opt/nvidia/nvda_nixl/lib/x86_64-linux-gnu",
        "/opt/nvidia/nvda_nixl/lib64",
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        dirs.push(PathBuf::from(dir));
    }
    dirs.iter()
        .any(|dir| Path::new(dir).join("libnixl_capi.so").exists())
}

#[test]
fn asking_whether_nixl_is_loaded_answers_the_same_every_time() {
    let first = dynamo_kvbm::is_nixl_loaded();
    assert_eq!(dynamo_kvbm::is_nixl_loaded(), first);
    if !nixl_installed() {
        assert!(
            !first,
            "no libnixl_capi.so on the loader's path, yet NIXL is loaded"
        );
    }
}
