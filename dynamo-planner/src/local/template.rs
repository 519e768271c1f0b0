//! [`WorkerTemplate`]: the command line of one pool's workers.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;

use dynamo_core::WorkerRole;

/// How to start one worker of a pool: a program, its arguments, and where each new worker's
/// id (and, for commands that need one, a fresh port) goes on its command line.
///
/// Every worker the [`LocalProcesses`](super::LocalProcesses) scaler starts from a template gets
/// the template's arguments, then `ID_FLAG ID` (a number unique among the scaler's workers,
/// which is also the id it registers under in discovery), then `PORT_FLAG PORT` when a port
/// flag is set.
///
/// ```
/// use dynamo_planner::local::WorkerTemplate;
///
/// let template = WorkerTemplate::new("dynamo-serve")
///     .args(["worker", "--engine", "mocker", "--registry", "/tmp/registry"])
///     .id_flag("--id");
/// assert_eq!(template.command_line(7, None), [
///     "dynamo-serve", "worker", "--engine", "mocker", "--registry", "/tmp/registry", "--id", "7",
/// ]);
/// ```
#[derive(Debug, Clone)]
pub struct WorkerTemplate {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    id_flag: Option<OsString>,
    port_flag: Option<OsString>,
    log_dir: Option<PathBuf>,
}

impl WorkerTemplate {
    /// Workers run `program` (a path, or a name looked up in `PATH`).
    pub fn new(program: impl Into<OsString>) -> Self {
        WorkerTemplate {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            id_flag: Some("--id".into()),
            port_flag: None,
            log_dir: None,
        }
    }

    /// Add one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable for the workers (they inherit the rest of the
    /// environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The flag that gives a worker its id; `--id` unless told otherwise.
    pub fn id_flag(mut self, flag: impl Into<OsString>) -> Self {
        self.id_flag = Some(flag.into());
        self
    }

    /// Give workers no id on their command line (they choose their own, so the scaler cannot
    /// see them join: only for a [`Membership`](super::Membership) that does not go by id).
    pub fn without_id(mut self) -> Self {
        self.id_flag = None;
        self
    }

    /// Give each worker a free loopback port after `flag` (`dynamo-serve worker` needs none:
    /// it binds a free port itself and registers the address it got).
    pub fn port_flag(mut self, flag: impl Into<OsString>) -> Self {
        self.port_flag = Some(flag.into());
        self
    }

    /// Write each worker's standard output and error to `DIR/POOL-ID.log` (created if
    /// missing) instead of the scaler's own.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// The program and arguments of worker `id`, with `port` after the port flag.
    pub fn command_line(&self, id: u64, port: Option<u16>) -> Vec<OsString> {
        let mut line = vec![self.program.clone()];
        line.extend(self.args.iter().cloned());
        if let Some(flag) = &self.id_flag {
            line.extend([flag.clone(), id.to_string().into()]);
        }
        if let (Some(flag), Some(port)) = (&self.port_flag, port) {
            line.extend([flag.clone(), port.to_string().into()]);
        }
        line
    }

    /// The log file of worker `id` of `pool`, when the template has a log directory.
    pub fn log_file(&self, pool: WorkerRole, id: u64) -> Option<PathBuf> {
        let dir = self.log_dir.as_ref()?;
        Some(dir.join(format!("{pool}-{id}.log")))
    }

    /// A command for worker `id` of `pool`, killed if its [`tokio::process::Child`] is
    /// dropped.
    pub(crate) fn command(
        &self,
        pool: WorkerRole,
        id: u64,
    ) -> std::io::Result<tokio::process::Command> {
        let port = match self.port_flag {
            Some(_) => Some(free_port()?),
            None => None,
        };
        let mut line = self.command_line(id, port).into_iter();
        let mut command = tokio::process::Command::new(line.next().unwrap_or_default());
        command
            .args(line)
            .envs(self.envs.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let (Some(dir), Some(file)) = (&self.log_dir, self.log_file(pool, id)) {
            std::fs::create_dir_all(dir)?;
            let log = std::fs::File::create(file)?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        Ok(command)
    }
}

/// A loopback port nobody listens on now (the worker binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_ports_follow_the_arguments() {
        let template = WorkerTemplate::new("w").arg("serve").port_flag("--port");
        let line = template.command_line(3, Some(9000));
        assert_eq!(line, ["w", "serve", "--id", "3", "--port", "9000"]);
        let bare = WorkerTemplate::new("w").without_id().command_line(3, None);
        assert_eq!(bare, ["w"]);
        assert_eq!(template.log_file(WorkerRole::Decode, 3), None);
        let logged = template.log_dir("/logs").log_file(WorkerRole::Decode, 3);
        assert_eq!(logged, Some(PathBuf::from("/logs/decode-3.log")));
    }
}
