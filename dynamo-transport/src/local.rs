//! Throwaway `nats-server` and `etcd` processes on free loopback ports, for tests and local
//! trials: each is started from the program on `PATH` (Debian packages `nats-server` and
//! `etcd-server`), waits until its port answers, and is killed when dropped.
//!
//! ```no_run
//! use dynamo_transport::local::{LocalEtcd, LocalNats};
//!
//! let nats = LocalNats::start()?;
//! let etcd = LocalEtcd::start()?;
//! println!("NATS at {}, etcd at {}", nats.url(), etcd.url());
//! # Ok::<(), dynamo_transport::local::LocalServerError>(())
//! ```

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a local server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalServerError {
    /// The program could not be run (most often: it is not installed).
    #[error("cannot run {program} (is it installed and on PATH?): {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// It ran but did not open its port in time, or exited.
    #[error("{program} did not start listening on port {port} within {START_TIMEOUT:?}")]
    NotListening {
        /// The program.
        program: &'static str,
        /// The port it was given.
        port: u16,
    },
    /// No free port could be found.
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
}

/// A port nobody listens on now.
///
/// # Errors
///
/// [`LocalServerError::NoPort`] when the operating system gives none.
pub fn free_port() -> Result<u16, LocalServerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(LocalServerError::NoPort)?;
    Ok(listener
        .local_addr()
        .map_err(LocalServerError::NoPort)?
        .port())
}

/// A child process killed (and waited for) on drop.
#[derive(Debug)]
struct Server {
    child: Option<Child>,
    program: &'static str,
    port: u16,
}

impl Server {
    fn start(program: &'static str, port: u16, args: &[String]) -> Result<Self, LocalServerError> {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LocalServerError::Spawn { program, source })?;
        let mut server = Server {
            child: Some(child),
            program,
            port,
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> Result<(), LocalServerError> {
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| child.try_wait().ok().flatten().is_some());
            if exited || started.elapsed() > START_TIMEOUT {
                self.stop();
                return Err(LocalServerError::NotListening {
                    program: self.program,
                    port: self.port,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `nats-server` on a loopback port.
#[derive(Debug)]
pub struct LocalNats {
    server: Server,
}

impl LocalNats {
    /// Start one on a free port.
    ///
    /// # Errors
    ///
    /// [`LocalServerError`] when it cannot be run or does not listen.
    pub fn start() -> Result<Self, LocalServerError> {
        Self::start_on(free_port()?)
    }

    /// Start one on `port` (to restart a stopped one where its clients expect it).
    ///
    /// # Errors
    ///
    /// [`LocalServerError`] when it cannot be run or does not listen.
    pub fn start_on(port: u16) -> Result<Self, LocalServerError> {
        let args = ["-a", "127.0.0.1", "-p", &port.to_string()].map(String::from);
        Ok(LocalNats {
            server: Server::start("nats-server", port, &args)?,
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Its client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.server.port)
    }

    /// Kill it now.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// A single-member `etcd` on loopback ports, with its data in a fresh temporary directory
/// (removed on drop).
#[derive(Debug)]
pub struct LocalEtcd {
    server: Server,
    data: PathBuf,
}

impl LocalEtcd {
    /// Start one on free ports.
    ///
    /// # Errors
    ///
    /// [`LocalServerError`] when it cannot be run or does not listen.
    pub fn start() -> Result<Self, LocalServerError> {
        let client = free_port()?;
        let peer = free_port()?;
        let data =
            std::env::temp_dir().join(format!("dynamo-etcd-{}-{client}", std::process::id()));
        let client_url = format!("http://127.0.0.1:{client}");
        let args = [
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--listen-client-urls".to_owned(),
            client_url.clone(),
            "--advertise-client-urls".to_owned(),
            client_url,
            "--listen-peer-urls".to_owned(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls".to_owned(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-cluster".to_owned(),
            format!("default=http://127.0.0.1:{peer}"),
        ];
        let server = Server::start("etcd", client, &args)?;
        Ok(LocalEtcd { server, data })
    }

    /// Its client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
