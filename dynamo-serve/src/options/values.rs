//! Parsers of flag values that are more than a number or a name.

use std::net::SocketAddr;
use std::str::FromStr;

/// `--worker-at` values: `[ID=]ADDR`, separated by commas.
#[derive(Debug, Clone)]
pub(super) struct WorkerAddresses(Vec<(Option<u64>, SocketAddr)>);

impl FromStr for WorkerAddresses {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let parse = |part: &str| {
            let (id, address) = match part.split_once('=') {
                Some((id, address)) => {
                    let id = id
                        .parse()
                        .map_err(|_| format!("{id:?} is not a worker id"))?;
                    (Some(id), address)
                }
                None => (None, part),
            };
            let address = address
                .parse()
                .map_err(|_| format!("{address:?} is not an IP address and port"))?;
            Ok((id, address))
        };
        let workers = value
            .split(',')
            .filter(|part| !part.is_empty())
            .map(parse)
            .collect::<Result<_, String>>()?;
        Ok(WorkerAddresses(workers))
    }
}

/// The workers of every `--worker-at`, in order; one without an id takes its place in the
/// list, counting from 1.
pub(super) fn number_workers(lists: &[WorkerAddresses]) -> Vec<(u64, SocketAddr)> {
    lists
        .iter()
        .flat_map(|list| &list.0)
        .zip(1..)
        .map(|(&(id, address), place)| (id.unwrap_or(place), address))
        .collect()
}

/// A whole number that is not 0.
pub(super) fn at_least_one<T: FromStr + PartialEq + From<u8>>(value: &str) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(number) if number != T::from(0) => Ok(number),
        Ok(_) => Err("must be at least 1".to_owned()),
        Err(_) => Err("not a whole number".to_owned()),
    }
}

/// A failure rate `FAILURES/WINDOW`: at least one failure, no more than the window.
pub(super) fn failure_rate(value: &str) -> Result<dynamo_core::layers::FailureRate, String> {
    let parsed = value
        .split_once('/')
        .and_then(|(failures, window)| Some((failures.parse().ok()?, window.parse().ok()?)));
    match parsed {
        Some((failures, window)) if 1 <= failures && failures <= window => {
            Ok(dynamo_core::layers::FailureRate { failures, window })
        }
        _ => Err("must be FAILURES/WINDOW, such as 10/20, with 1 <= FAILURES <= WINDOW".to_owned()),
    }
}

/// A finite number above 0.
pub(super) fn positive_number(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if number > 0.0 && number.is_finite() => Ok(number),
        _ => Err("must be a positive number".to_owned()),
    }
}
