//! Errors that name their command: clap's, with the command's usage line where clap gives
//! none and a tip where a flag belongs to another command; and the binary's own.

use std::ffi::OsString;

use clap::CommandFactory;
use clap::error::{ContextKind, ContextValue, ErrorKind};

use super::flags::Cli;

/// The command `args` name (`""` for the single-process job).
pub(super) fn named_command(args: &[OsString]) -> &'static str {
    let first = args.get(1).and_then(|arg| arg.to_str());
    ["worker", "frontend", "planner", "openapi"]
        .into_iter()
        .find(|&name| first == Some(name))
        .unwrap_or("")
}

/// Apply `apply` to the clap command `name` (`""` for the top level), built so that its
/// usage line names the binary and the command.
fn with_command<R>(name: &str, apply: impl FnOnce(&mut clap::Command) -> R) -> R {
    let mut command = Cli::command();
    command.build();
    match command.find_subcommand_mut(name) {
        Some(subcommand) => apply(subcommand),
        None => apply(&mut command),
    }
}

/// A validation error of command `name`, with its usage line.
pub(super) fn error_of(name: &str, kind: ErrorKind, message: &str) -> clap::Error {
    with_command(name, |command| command.error(kind, message))
}

/// `error`, with the usage line of command `name` where clap gave none (as for a value it
/// cannot parse), so that every error names its command.
pub(super) fn with_usage(mut error: clap::Error, name: &str) -> clap::Error {
    let shown = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !shown && error.get(ContextKind::Usage).is_none() {
        let usage = with_command(name, |command| command.render_usage());
        error.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
    }
    error
}

/// `error`, with a tip naming the commands that take the flag, where it is a flag of another
/// command.
pub(super) fn with_owners(mut error: clap::Error) -> clap::Error {
    if error.kind() != ErrorKind::UnknownArgument {
        return error;
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let flag = flag.split('=').next().unwrap_or_default().to_owned();
    let Some(long) = flag.strip_prefix("--") else {
        return error;
    };
    let mut command = Cli::command();
    command.build();
    let takes = |command: &clap::Command| {
        command
            .get_arguments()
            .any(|argument| argument.get_long() == Some(long))
    };
    let mut owners = Vec::new();
    if takes(&command) {
        owners.push("`dynamo-serve` (the single process)".to_owned());
    }
    for subcommand in command
        .get_subcommands()
        .filter(|&subcommand| takes(subcommand))
    {
        owners.push(format!("`dynamo-serve {}`", subcommand.get_name()));
    }
    if owners.is_empty() {
        return error;
    }
    let mut tips = match error.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(format!("{flag} is a flag of {}", owners.join(" and ")).into());
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    error
}
