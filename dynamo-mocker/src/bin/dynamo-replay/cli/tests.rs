use clap::CommandFactory;

use super::*;
use crate::planning::PlannerName;
use dynamo_planner::predict::PredictorKind;

#[test]
fn the_command_is_well_formed() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_are_the_library_defaults() {
    let cli = Cli::try_parse_from(["dynamo-replay", "--trace", "t.jsonl"]).expect("parses");
    assert_eq!(cli.config(), ReplayConfig::default());
    assert_eq!(
        cli.routers,
        [RouterName::RoundRobin, RouterName::Kv, RouterName::Ttft]
    );
    assert_eq!(cli.seed, 0);
    assert!(!cli.json);
    assert_eq!(cli.planner.policy, PlannerName::None);
    assert!(cli.command.is_none());
}

#[test]
fn planner_flags_parse_and_profile_needs_no_trace() {
    let cli = Cli::try_parse_from([
        "dynamo-replay",
        "--trace",
        "t.csv",
        "--planner",
        "dynamo",
        "--predictor",
        "moving_average:3",
        "--max-workers",
        "6",
        "--fixed-sweep",
    ])
    .expect("parses");
    assert_eq!(cli.planner.policy, PlannerName::Dynamo);
    assert_eq!(
        cli.planner.predictor,
        PredictorKind::MovingAverage { window: 3 }
    );
    assert_eq!(cli.planner.max_workers, 6);
    assert!(cli.planner.fixed_sweep);
    let cli = Cli::try_parse_from(["dynamo-replay", "profile", "--out", "p.json"]).expect("parses");
    assert!(matches!(cli.command, Some(Command::Profile { .. })));
    assert!(Cli::try_parse_from(["dynamo-replay"]).is_err());
    assert!(
        Cli::try_parse_from(["dynamo-replay", "--trace", "t", "--predictor", "oracle"]).is_err()
    );
}

#[test]
fn generate_needs_no_trace_and_names_a_pattern() {
    let cli = Cli::try_parse_from([
        "dynamo-replay",
        "generate",
        "--pattern",
        "hot-prefix",
        "--seed",
        "3",
        "--out",
        "t.jsonl",
    ])
    .expect("parses");
    let Some(Command::Generate {
        pattern,
        requests,
        rate,
        seed,
        ..
    }) = cli.command
    else {
        panic!("not generate: {:?}", cli.command);
    };
    assert_eq!(SharingPattern::from(pattern), SharingPattern::HotPrefix);
    assert_eq!((requests, rate, seed), (4000, None, 3));
    for bad in [["--pattern", "nope"], ["--rate", "0"]] {
        // Valid but for `bad` (a flag given twice keeps its last value).
        let mut args = vec![
            "dynamo-replay",
            "generate",
            "--out",
            "t.jsonl",
            "--pattern",
            "documents",
        ];
        args.extend(bad);
        let error = Cli::try_parse_from(args).expect_err("refused");
        assert!(error.to_string().contains(bad[0]), "{error}");
    }
    let cli = Cli::try_parse_from(["dynamo-replay", "--trace", "t", "--ttft-stall-weight", "0"])
        .expect("parses");
    assert_eq!(cli.ttft_stall_weight, 0.0);
    assert!(
        Cli::try_parse_from(["dynamo-replay", "--trace", "t", "--ttft-stall-weight", "-1"])
            .is_err()
    );
}

#[test]
fn routers_are_trimmed_repeatable_and_labelled_by_name() {
    let cli = Cli::try_parse_from([
        "dynamo-replay",
        "--trace",
        "t.jsonl",
        "--router",
        "approx-kv, p2c",
        "--router",
        "kv",
    ])
    .expect("parses");
    let names: Vec<String> = cli.routers.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["approx-kv", "p2c", "kv"]);
}

#[test]
fn a_repeated_flag_keeps_its_last_value() {
    let cli = Cli::try_parse_from([
        "dynamo-replay",
        "--trace",
        "t.jsonl",
        "--workers",
        "2",
        "--workers",
        "3",
        "--json",
        "--json",
    ])
    .expect("parses");
    assert_eq!(cli.workers, 3);
}

#[test]
fn a_repeated_router_replicas_keeps_its_last_list() {
    let cli = Cli::try_parse_from([
        "dynamo-replay",
        "--trace",
        "t.jsonl",
        "--router-replicas",
        "1,2",
        "--router-replicas",
        "4,8",
        "--num-gpu-blocks",
        "100",
        "--num-gpu-blocks",
        "200",
    ])
    .expect("parses");
    assert_eq!(cli.router_replicas, [4, 8]);
    assert_eq!(cli.num_gpu_blocks, 200);
    let cli = Cli::try_parse_from(["dynamo-replay", "--trace", "t.jsonl"]).expect("parses");
    assert_eq!(cli.router_replicas, [1]);
}

#[test]
fn prefill_and_decode_pools_make_a_disaggregated_replay() {
    let cli = Cli::try_parse_from([
        "dynamo-replay",
        "--trace",
        "t.jsonl",
        "--prefill-workers",
        "2",
        "--decode-workers",
        "6",
        "--transfer-bandwidth",
        "50",
        "--transfer-latency-ms",
        "0.5",
        "--placement",
        "always-remote, expected-ttft,router-cost",
        "--placement",
        "stall-free,stall-free-pull",
    ])
    .expect("parses");
    let config = cli.config();
    let disagg = config.disagg.expect("disaggregated");
    assert_eq!((disagg.prefill_workers, disagg.decode_workers), (2, 6));
    assert_eq!(disagg.transfer.bandwidth_gb_per_s, 50.0);
    assert_eq!(disagg.transfer.latency_ms, 0.5);
    assert_eq!(disagg.transfer.kv_bytes_per_token, 131_072);
    assert_eq!(disagg.handed_over_kv, HandedOverKv::Discarded);
    assert_eq!(
        cli.placements,
        [
            PlacementName::AlwaysRemote,
            PlacementName::ExpectedTtft,
            PlacementName::RouterCost,
            PlacementName::StallFree,
            PlacementName::StallFreePull
        ]
    );
    assert_eq!(cli.decode_router, RouterName::KvLoad);
    assert_eq!(cli.handoff_router, RouterName::KvLoad);
    // Without the flags: aggregated, with Dynamo's instant hand-over as the default link.
    let cli = Cli::try_parse_from(["dynamo-replay", "--trace", "t.jsonl"]).expect("parses");
    assert_eq!(cli.config().disagg, None);
    assert_eq!(cli.transfer(), TransferConfig::default());
}

#[test]
fn one_pool_alone_is_refused() {
    for (flag, missing) in [
        ("--prefill-workers", "--decode-workers"),
        ("--decode-workers", "--prefill-workers"),
    ] {
        let error = Cli::try_parse_from(["dynamo-replay", "--trace", "t.jsonl", flag, "2"])
            .expect_err("refused");
        assert!(error.to_string().contains(missing), "{error}");
        assert_eq!(error.exit_code(), 2);
    }
}

#[test]
fn bad_values_name_their_flag() {
    for (flag, value) in [
        ("--workers", "0"),
        ("--block-size", "0"),
        ("--seed", "x"),
        ("--speedup", "0"),
        ("--speedup", "-1"),
        ("--speedup", "NaN"),
        ("--router", "nope"),
        ("--placement", "nowhere"),
        ("--transfer-bandwidth", "-1"),
        ("--decode-router", "nope"),
    ] {
        let error = Cli::try_parse_from(["dynamo-replay", "--trace", "t.jsonl", flag, value])
            .expect_err("refused");
        assert!(error.to_string().contains(flag), "{error}");
        assert_eq!(error.exit_code(), 2);
    }
}
