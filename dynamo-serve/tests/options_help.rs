//! The command line as a user meets it: each command's `--help` lists its own flags, and a
//! mistake exits with status 2 and a message naming the command, before anything starts.

use std::process::{Command, Output};

fn dynamo_serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dynamo-serve"))
        .args(args)
        .output()
        .expect("dynamo-serve runs")
}

/// The long flags a help text lists (at the start of its lines, not in the prose).
fn flags(help: &str) -> Vec<&str> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| {
            line.split_whitespace()
                .map(|word| word.trim_end_matches(','))
                .take_while(|word| word.starts_with('-'))
                .filter(|word| word.starts_with("--"))
        })
        .collect()
}

#[test]
fn each_command_lists_only_its_own_flags() {
    let shared = [
        "--host",
        "--port",
        "--model",
        "--name",
        "--block-size",
        "--help",
    ];
    let cases: [(&[&str], &[&str], &[&str]); 3] = [
        (
            &["--help"],
            &[
                "--workers",
                "--engine",
                "--speedup",
                "--kv-blocks",
                "--router",
                "--default-max-tokens",
                "--max-in-flight",
                "--sampling-defaults",
            ],
            &[
                "--nats",
                "--etcd",
                "--registry",
                "--id",
                "--worker-at",
                "--lease-ttl",
            ],
        ),
        (
            &["worker", "--help"],
            &[
                "--engine",
                "--speedup",
                "--kv-blocks",
                "--nats",
                "--etcd",
                "--registry",
                "--namespace",
                "--id",
                "--lease-ttl",
            ],
            &[
                "--workers",
                "--router",
                "--sampling-defaults",
                "--worker-at",
            ],
        ),
        (
            &["frontend", "--help"],
            &[
                "--router",
                "--default-max-tokens",
                "--max-in-flight",
                "--sampling-defaults",
                "--nats",
                "--etcd",
                "--registry",
                "--namespace",
                "--worker-at",
            ],
            &["--workers", "--engine", "--id", "--lease-ttl"],
        ),
    ];
    for (args, own, others) in cases {
        let output = dynamo_serve(args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        let help = String::from_utf8(output.stdout).expect("UTF-8");
        let listed = flags(&help);
        for flag in shared.iter().chain(own) {
            assert!(listed.contains(flag), "{args:?} lists {flag}:\n{help}");
        }
        for flag in others {
            assert!(
                !listed.contains(flag),
                "{args:?} does not list {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn the_help_says_how_logs_are_chosen() {
    let output = dynamo_serve(&["--help"]);
    let help = String::from_utf8(output.stdout).expect("UTF-8");
    assert!(help.contains("RUST_LOG"), "{help}");
}

#[test]
fn the_sampling_defaults_say_what_the_embedded_model_recommends() {
    for command in [&["--help"][..], &["frontend", "--help"]] {
        let output = dynamo_serve(command);
        let help = String::from_utf8(output.stdout).expect("UTF-8");
        assert!(
            help.contains("the embedded SmolLM2 card recommends temperature 0.2, top_p 0.9"),
            "{help}"
        );
    }
}

#[test]
fn a_mistake_exits_with_status_2_naming_its_command() {
    for (args, says) in [
        (&["worker", "--workers", "2"][..], "dynamo-serve worker"),
        (
            &["frontend", "--registry", "/nonexistent"],
            "--router kv needs",
        ),
        (
            &["frontend", "--worker-at", "nowhere"],
            "dynamo-serve frontend",
        ),
        (&["--engine", "warp"], "Usage: dynamo-serve"),
    ] {
        let output = dynamo_serve(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let error = String::from_utf8(output.stderr).expect("UTF-8");
        assert!(error.contains(says), "{args:?}: {error}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
