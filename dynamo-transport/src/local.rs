//! Throwaway `nats-server`, `etcd` and S3 ([`LocalS3`]) processes on free loopback ports, for
//! tests and local trials: each is started from the program on `PATH` (Debian packages
//! `nats-server` and `etcd-server`, PyPI's `moto[server]`), waits until its port answers, and
//! is killed when dropped.
//!
//! ```no_run
//! use dynamo_transport::local::{LocalEtcd, LocalNats};
//!
//! let nats = LocalNats::start()?;
//! let etcd = LocalEtcd::start()?;
//! tracing::info!("NATS at {}, etcd at {}", nats.url(), etcd.url());
//! # Ok::<(), dynamo_transport::Error>(())
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a server may take to open its port.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The ports [`free_port`] has handed out in this process.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port nobody listens on now, and that this process has not been given before: tests that
/// run side by side and each start a server never get the same port, even when the first has
/// not bound it yet.
///
/// # Errors
///
/// [`Error::NoFreePort`] when the operating system gives none.
pub fn free_port() -> Result<u16, Error> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    // Below Linux's ephemeral range (32768 and up): a port from that range can be taken by any
    // outgoing connection in the moment before the server binds it.
    let span = u32::from(EPHEMERAL_START - FIRST_PORT);
    let offset = std::process::id().wrapping_mul(7919) % span;
    for step in 0..span {
        let port = FIRST_PORT + ((offset + step) % span) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(Error::NoFreePort {
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port left").into(),
    })
}

/// The ports [`free_port`] hands out: from here up to the ephemeral range.
const FIRST_PORT: u16 = 20_000;
const EPHEMERAL_START: u16 = 32_768;

/// A child process killed (and waited for) on drop. What it writes goes to a log file, removed
/// on drop, whose end is reported when the process does not start.
#[derive(Debug)]
struct Server {
    child: Option<Child>,
    program: &'static str,
    port: u16,
    log: PathBuf,
}

/// Numbers the log files of this process's servers (one port can be started twice).
static STARTED: AtomicUsize = AtomicUsize::new(0);

impl Server {
    fn start(program: &'static str, port: u16, args: &[String]) -> Result<Self, Error> {
        Self::start_at(program, Path::new(program), port, args)
    }

    /// [`start`](Self::start) with the program at `command` (a path, or a name on `PATH`);
    /// `program` names it in errors and logs.
    fn start_at(
        program: &'static str,
        command: &Path,
        port: u16,
        args: &[String],
    ) -> Result<Self, Error> {
        let cannot_run = |error: std::io::Error| Error::CannotRun {
            program,
            source: error.into(),
        };
        let log = std::env::temp_dir().join(format!(
            "dynamo-{program}-{}-{port}-{}.log",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let output = File::create(&log).map_err(cannot_run)?;
        let child = Command::new(command)
            .args(args)
            .stdout(output.try_clone().map_err(cannot_run)?)
            .stderr(output)
            .spawn()
            .map_err(cannot_run)?;
        let mut server = Server {
            child: Some(child),
            program,
            port,
            log,
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        while !someone_listens(self.port) {
            if !self.running() || started.elapsed() > START_TIMEOUT {
                return Err(self.not_listening());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stop it and say that it did not start, with the end of what it wrote.
    fn not_listening(&mut self) -> Error {
        let state = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => format!("[it exited: {status}]"),
            _ => "[it was still running]".to_owned(),
        };
        self.stop();
        let written = std::fs::read(&self.log).unwrap_or_default();
        let tail = &written[written.len().saturating_sub(LOG_TAIL)..];
        Error::NotListening {
            program: self.program,
            port: self.port,
            log: format!("{}{state}", String::from_utf8_lossy(tail)),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How much of a server's log a [`Error::NotListening`] carries, in bytes.
const LOG_TAIL: usize = 2048;

/// Whether a process listens on `port`. A connection to a free port in the ephemeral range can
/// succeed by connecting to itself (TCP simultaneous open, when the kernel happens to pick the
/// same port for the client's end); that one is not a listener.
fn someone_listens(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .is_ok_and(|stream| stream.local_addr().ok().map(|local| local.port()) != Some(port))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
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
    /// [`Error::CannotRun`] when it cannot be run, [`Error::NotListening`] when it does not
    /// listen, and [`Error::NoFreePort`] when no port is free.
    pub fn start() -> Result<Self, Error> {
        // A server that lost its port to another process in the moment after `free_port`
        // does not greet; a fresh port is tried then.
        Self::start_with(&[])
    }

    /// Start one on a free port with more command-line flags, for example `--user` and
    /// `--pass`, or `--tls --tlscert FILE --tlskey FILE`.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_with(flags: &[&str]) -> Result<Self, Error> {
        retry_not_listening(|| Self::start_once(free_port()?, flags))
    }

    /// Start one on `port` (to restart a stopped one where its clients expect it).
    ///
    /// # Errors
    ///
    /// [`Error::CannotRun`] when it cannot be run and [`Error::NotListening`] when it does not
    /// listen.
    pub fn start_on(port: u16) -> Result<Self, Error> {
        retry_not_listening(|| Self::start_once(port, &[]))
    }

    fn start_once(port: u16, flags: &[&str]) -> Result<Self, Error> {
        let port_text = port.to_string();
        let args: Vec<String> = ["-a", "127.0.0.1", "-p", &port_text]
            .iter()
            .chain(flags)
            .map(|arg| (*arg).to_owned())
            .collect();
        let mut server = Server::start("nats-server", port, &args)?;
        // Something answers on the port: it is this server only if it greets as NATS does
        // and is still running.
        if !(greets_as_nats(port) && server.running()) {
            return Err(server.not_listening());
        }
        Ok(LocalNats { server })
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

/// Run `start` up to three times while it fails with [`Error::NotListening`]: on a loaded
/// machine a nats-server rarely fails to start without writing a word (seen once in about
/// thirty thousand starts), and a second try succeeds. The last error, with the server's output, is returned.
fn retry_not_listening<T>(mut start: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut tries = 3;
    loop {
        match start() {
            Err(error @ Error::NotListening { .. }) if tries > 1 => {
                tracing::warn!(%error, "a local server did not start; trying again");
                tries -= 1;
            }
            started => return started,
        }
    }
}

/// Whether the server on `port` opens a connection with NATS's `INFO` line.
fn greets_as_nats(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut greeting = [0u8; 4];
    stream.set_read_timeout(Some(START_TIMEOUT)).is_ok()
        && stream.read_exact(&mut greeting).is_ok()
        && &greeting == b"INFO"
}

/// A single-member `etcd` on loopback ports, with its data in a fresh temporary directory
/// (removed on drop).
#[derive(Debug)]
pub struct LocalEtcd {
    server: Server,
    data: PathBuf,
    args: Vec<String>,
    scheme: &'static str,
}

impl LocalEtcd {
    /// Start one on free ports.
    ///
    /// # Errors
    ///
    /// [`Error::CannotRun`] when it cannot be run, [`Error::NotListening`] when it does not
    /// listen, and [`Error::NoFreePort`] when no port is free.
    pub fn start() -> Result<Self, Error> {
        retry_not_listening(|| Self::start_once(None))
    }

    /// Start one that serves its clients HTTPS with the PEM certificate `cert` (which must
    /// name 127.0.0.1) and its key.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Self, Error> {
        retry_not_listening(|| Self::start_once(Some((cert, key))))
    }

    fn start_once(tls: Option<(&Path, &Path)>) -> Result<Self, Error> {
        let client = free_port()?;
        let peer = free_port()?;
        let data =
            std::env::temp_dir().join(format!("dynamo-etcd-{}-{client}", std::process::id()));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let mut args = vec![
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
        if let Some((cert, key)) = tls {
            args.extend([
                "--cert-file".to_owned(),
                cert.display().to_string(),
                "--key-file".to_owned(),
                key.display().to_string(),
            ]);
        }
        let server = Server::start("etcd", client, &args).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&data);
        })?;
        Ok(LocalEtcd {
            server,
            data,
            args,
            scheme,
        })
    }

    /// Kill it and start it again on the same ports with the same data (its keys and leases
    /// survive), as an operator restarting etcd does.
    ///
    /// # Errors
    ///
    /// [`Error::NotListening`] when it does not come back.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.server.stop();
        let port = self.server.port;
        self.server = retry_not_listening(|| Server::start("etcd", port, &self.args))?;
        Ok(())
    }

    /// Its client URL, `http://127.0.0.1:PORT` (`https://` from [`start_tls`](Self::start_tls)).
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.server.port)
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A `moto_server` on a loopback port: an S3-compatible server that keeps its objects in
/// memory (the PyPI package `moto[server]`), for the object-store tests. The program is
/// `DYNAMO_S3_SERVER` when set, else `moto_server` in CI's virtual environment
/// (`~/.cache/dynamo-ci/venv/bin`), else `moto_server` on `PATH`. It takes any credentials.
#[derive(Debug)]
pub struct LocalS3 {
    server: Server,
}

impl LocalS3 {
    /// Start one on a free port, holding one empty bucket called `bucket`.
    ///
    /// # Errors
    ///
    /// [`Error::CannotRun`] when it cannot be run or makes no bucket,
    /// [`Error::NotListening`] when it does not listen, and [`Error::NoFreePort`] when no port
    /// is free.
    pub fn start(bucket: &str) -> Result<Self, Error> {
        let command = Self::program();
        let server = retry_not_listening(|| {
            let port = free_port()?;
            let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(str::to_owned);
            Server::start_at("moto_server", &command, port, &args)
        })?;
        let s3 = LocalS3 { server };
        s3.create_bucket(bucket).map_err(|error| Error::CannotRun {
            program: "moto_server",
            source: format!("the bucket `{bucket}` was not made: {error}").into(),
        })?;
        Ok(s3)
    }

    /// Where the server is: `DYNAMO_S3_SERVER`, CI's virtual environment, or `PATH`.
    fn program() -> PathBuf {
        if let Some(path) = std::env::var_os("DYNAMO_S3_SERVER") {
            return path.into();
        }
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/dynamo-ci/venv/bin/moto_server"))
            .filter(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("moto_server"))
    }

    /// `PUT /{bucket}`: the server takes unsigned requests, and object stores make no buckets.
    fn create_bucket(&self, bucket: &str) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let port = self.server.port;
        let mut socket = TcpStream::connect(("127.0.0.1", port))?;
        socket.set_read_timeout(Some(START_TIMEOUT))?;
        write!(
            socket,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer)?;
        if answer.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        let status = answer.lines().next().unwrap_or("no answer").to_owned();
        Err(std::io::Error::other(status))
    }

    /// Its endpoint, `http://127.0.0.1:PORT` (plain HTTP: a client must allow it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }
}

/// A throwaway certificate authority for trying TLS on the request plane ([`PlaneTls`]) in
/// tests and local trials: a fresh key pair and self-signed CA certificate, which issues
/// certificates for the names and IP addresses asked for. Production deployments bring their
/// own authority.
///
/// ```
/// use dynamo_transport::local::LocalAuthority;
/// use dynamo_transport::tcp::PlaneTls;
///
/// let authority = LocalAuthority::new()?;
/// let worker = authority.issue(&["127.0.0.1", "dynamo-worker"])?;
/// let tls = PlaneTls::from_pem(authority.pem().as_bytes(), worker.cert.as_bytes(), worker.key.as_bytes())?;
/// assert!(!tls.is_mutual());
/// # Ok::<(), dynamo_transport::Error>(())
/// ```
///
/// [`PlaneTls`]: crate::tcp::PlaneTls
pub struct LocalAuthority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for LocalAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAuthority").finish_non_exhaustive()
    }
}

/// A certificate and its private key, as PEM text.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl LocalAuthority {
    /// A new authority.
    ///
    /// # Errors
    ///
    /// [`Error::BadTls`] when the key or certificate cannot be made.
    pub fn new() -> Result<Self, Error> {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cannot_issue)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dynamo local authority");
        let key = rcgen::KeyPair::generate().map_err(cannot_issue)?;
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).map_err(cannot_issue)?;
        Ok(LocalAuthority { issuer })
    }

    /// Its certificate, the one to trust.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names, or IP addresses, which become IP address
    /// subject-alternative names), signed by this authority, with a fresh key.
    ///
    /// # Errors
    ///
    /// [`Error::BadTls`] when a name cannot be used.
    pub fn issue(&self, names: &[&str]) -> Result<LocalIdentity, Error> {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).map_err(cannot_issue)?;
        let key = rcgen::KeyPair::generate().map_err(cannot_issue)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cannot_issue)?;
        Ok(LocalIdentity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn cannot_issue(error: rcgen::Error) -> Error {
    Error::BadTls {
        what: "a local certificate",
        reason: error.to_string(),
    }
}
