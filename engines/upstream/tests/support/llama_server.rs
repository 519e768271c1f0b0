//! llama.cpp's HTTP server, from the prebuilt CPU wheel of the PyPI package `xllamacpp`,
//! serving the SmolLM2 GGUF file the other tests use on a free loopback port; shared by
//! `tests/llama_cpp.rs` here and `dynamo-serve/tests/llama_cpp_frontend.rs`.
//!
//! Install it with `python -m pip install xllamacpp==2026.10.11549` (what `.ci/run` does in
//! its virtual environment).

#![allow(dead_code, reason = "each test binary uses part of the start-up code")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The environment variable that names the Python with `xllamacpp` installed.
pub(crate) const PYTHON_VARIABLE: &str = "DYNAMO_LLAMA_PYTHON";

/// The `xllamacpp` release the tests were written against.
pub(crate) const XLLAMACPP: &str = "xllamacpp==2026.10.11549";

/// Starts llama.cpp's server through `xllamacpp` and says where it listens.
const LAUNCHER: &str = r#"
import sys, time
import xllamacpp as xlc
params = xlc.CommonParams()
params.model.path = sys.argv[1]
params.port = int(sys.argv[2])
params.n_ctx = 1024
params.cpuparams.n_threads = 2
params.endpoint_metrics = True
server = xlc.Server(params)
print("listening", server.listening_address, flush=True)
while True:
    time.sleep(3600)
"#;

/// The server process; killed when dropped.
pub(crate) struct LlamaServer {
    child: Child,
    /// Its loopback port.
    pub(crate) port: u16,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python named by [`PYTHON_VARIABLE`], if it is set.
pub(crate) fn python_from_env() -> Option<PathBuf> {
    std::env::var_os(PYTHON_VARIABLE).map(PathBuf::from)
}

/// Start llama.cpp's server with `python` (blocking: it loads the model before it listens).
///
/// # Panics
///
/// When the model cannot be fetched, or the server does not start (the message says how to
/// install `xllamacpp`).
pub(crate) fn start(python: &Path) -> LlamaServer {
    let cache = dynamo_assets::cache_dir().expect("a cache directory");
    let model = dynamo_assets::SMOLLM2_135M_INSTRUCT
        .fetch(&cache)
        .expect("the model file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(python)
        .args(["-c", LAUNCHER])
        .arg(&model)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{}: {error}", python.display()));
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        listening.starts_with("listening"),
        "llama.cpp's server did not start: install it with `{} -m pip install {XLLAMACPP}`",
        python.display()
    );
    LlamaServer {
        child,
        port,
        url: format!("http://127.0.0.1:{port}"),
    }
}
