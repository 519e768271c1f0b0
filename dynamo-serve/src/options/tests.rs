//! The command line's parsing and its refusals.

use dynamo_planner::WorkerGpus;
use dynamo_planner::local::RestartBackoff;
use dynamo_planner::predict::PredictorKind;

use super::*;

fn options(args: &str) -> Result<Options, clap::Error> {
    Options::try_parse_from(std::iter::once("dynamo-serve").chain(args.split_whitespace()))
}

fn refused(args: &str) -> clap::Error {
    options(args).expect_err("refused")
}

#[test]
fn the_single_process_job_needs_no_flags() {
    let serve = options("").expect("valid");
    assert!(matches!(serve.command, Command::Serve));
    assert_eq!(serve.port, Some(8000));
    assert_eq!(serve.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!((serve.workers, serve.block_size), (2, 16));
    assert_eq!(
        (serve.engine, serve.router, serve.sampling_defaults),
        (EngineKind::Candle, RouterKind::Kv, SamplingSource::Model)
    );
    assert_eq!((serve.name.as_str(), serve.model), ("smollm2", None));
    assert_eq!((serve.default_max_tokens, serve.max_in_flight), (256, 4096));
    let openapi = options("openapi out.json").expect("valid");
    assert!(matches!(openapi.command, Command::OpenApi(Some(path)) if path.ends_with("out.json")));
    let serve = options("--engine echo --router round-robin --workers 3 --sampling-defaults none")
        .expect("valid");
    assert_eq!(
        (serve.workers, serve.sampling_defaults),
        (3, SamplingSource::Off)
    );
}

#[test]
fn each_command_takes_its_own_flags() {
    let worker = options("worker --engine mocker --etcd http://e:2379 --id 3").expect("valid");
    assert!(matches!(worker.command, Command::Worker));
    assert_eq!((worker.id, worker.port), (Some(3), None));
    assert_eq!((worker.engine, worker.lease_ttl), (EngineKind::Mocker, 5));

    let error = refused("worker --workers 2");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    let text = error.to_string();
    assert!(text.contains("'--workers'"), "{text}");
    assert!(text.contains("Usage: dynamo-serve worker"), "{text}");
    assert!(
        text.contains("--workers is a flag of `dynamo-serve` (the single process)"),
        "{text}"
    );

    let error = refused("frontend --engine mocker --registry r");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    assert!(
        error.to_string().contains("dynamo-serve frontend"),
        "{error}"
    );
    let error = refused("--etcd http://e:2379");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    assert!(
        error
            .to_string()
            .contains("--etcd is a flag of `dynamo-serve worker` and `dynamo-serve frontend`"),
        "{error}"
    );
    let error = refused("--bogus 1");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    assert!(!error.to_string().contains("is a flag of"), "{error}");
    // The single process's flags go before no command.
    assert_eq!(
        refused("--workers 3 worker").kind(),
        ErrorKind::ArgumentConflict
    );
}

#[test]
fn every_error_names_its_command() {
    let error = refused("worker --engine bogus");
    assert_eq!(error.kind(), ErrorKind::InvalidValue);
    let text = error.to_string();
    assert!(text.contains("candle, mocker, echo"), "{text}");
    assert!(text.contains("Usage: dynamo-serve worker"), "{text}");
    let text = refused("--port x").to_string();
    assert!(text.contains("Usage: dynamo-serve [OPTIONS]"), "{text}");
    let text = refused("frontend --registry r").to_string();
    assert!(text.contains("Usage: dynamo-serve frontend"), "{text}");
}

#[test]
fn candle_workers_take_host_and_disk_tiers() {
    let serve = options("").expect("valid");
    assert_eq!((serve.host_cache_blocks, serve.disk_cache), (0, None));
    let serve = options("--host-cache-blocks 64 --disk-cache /tmp/kv").expect("valid");
    assert_eq!(serve.host_cache_blocks, 64);
    let disk = |dir: &str, blocks, repeats_only| DiskTier {
        dir: PathBuf::from(dir),
        blocks,
        repeats_only,
    };
    assert_eq!(serve.disk_cache, Some(disk("/tmp/kv", 1024, false)));
    let worker = options(
        "worker --etcd http://e:2379 --disk-cache d --disk-cache-blocks 8 \
         --disk-cache-admission seen-twice",
    )
    .expect("valid");
    assert_eq!(worker.disk_cache, Some(disk("d", 8, true)));
    let error = refused("--disk-cache-admission seen-twice");
    assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    let error = refused("--disk-cache-blocks 8");
    assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
    let error = refused("--disk-cache d --disk-cache-blocks 0");
    assert_eq!(error.kind(), ErrorKind::ValueValidation);
}

#[test]
fn disaggregated_serving_takes_pools_roles_and_a_placement() {
    let serve = options("--prefill-workers 1 --decode-workers 2").expect("valid");
    assert_eq!(
        (serve.prefill_workers, serve.decode_workers, serve.workers),
        (1, 2, 3)
    );
    assert_eq!(serve.placement, PlacementKind::AlwaysRemote);
    let serve = options("--prefill-workers 2 --placement expected-ttft").expect("valid");
    assert_eq!(
        (serve.decode_workers, serve.placement),
        (1, PlacementKind::ExpectedTtft)
    );
    let frontend =
        options("frontend --registry r --router approx-kv --placement flexible").expect("valid");
    assert_eq!(frontend.placement, PlacementKind::Flexible);
    let serve = options("--prefill-workers 1 --placement router-cost").expect("valid");
    assert_eq!(serve.placement, PlacementKind::RouterCost);
    let serve = options("--prefill-workers 1 --placement stall-free").expect("valid");
    assert_eq!(serve.placement, PlacementKind::StallFree);
    assert_eq!(
        refused("--prefill-workers 1 --workers 2").kind(),
        ErrorKind::ArgumentConflict
    );
    assert_eq!(
        refused("--decode-workers 2").kind(),
        ErrorKind::MissingRequiredArgument
    );
    let worker = options("worker --registry r --role prefill --kv-port 7100").expect("valid");
    assert_eq!(
        (worker.role, worker.kv_port),
        (RoleKind::Prefill, Some(7100))
    );
    assert_eq!(options("").expect("valid").prefill_workers, 0);
    let error = refused("frontend --registry r --router round-robin --role decode");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
}

#[test]
fn numbers_are_checked() {
    for args in [
        "--workers 0",
        "--kv-blocks 0",
        "worker --max-running 0",
        "--speedup 0",
        "--speedup inf",
        "worker --lease-ttl 0",
        "--port 70000",
        "--host localhost",
    ] {
        assert_eq!(refused(args).kind(), ErrorKind::ValueValidation, "{args}");
    }
    assert!(
        refused("--workers 0")
            .to_string()
            .contains("must be at least 1")
    );
    let worker = options("worker --engine mocker --max-running 12").expect("valid");
    assert_eq!(worker.max_running, Some(12));
    assert_eq!(options("").expect("valid").max_running, None);
}

#[test]
fn a_frontend_needs_discovery_and_kv_routing_needs_nats() {
    let error = refused("frontend --nats nats://n:4222");
    assert!(
        error
            .to_string()
            .contains("--etcd URL, --registry DIR, --kubernetes-discovery or --worker-at"),
        "{error}"
    );
    let error = refused("frontend --registry /tmp/r");
    assert!(error.to_string().contains("--router kv needs"), "{error}");
    let error = refused("frontend --registry /tmp/r --etcd http://e:2379 --nats n");
    assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    let error = refused("frontend --worker-at 127.0.0.1:9000 --etcd http://e:2379 --nats n");
    assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    let error = refused("worker --registry /tmp/r --etcd http://e:2379");
    assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    let error = refused("--engine echo");
    assert!(
        error
            .to_string()
            .contains("echo workers publish no KV events"),
        "{error}"
    );

    let frontend = options(
        "frontend --worker-at 7=127.0.0.1:9000,127.0.0.1:9001 --worker-at 127.0.0.1:9002 \
         --router round-robin --sampling-defaults none",
    )
    .expect("valid");
    assert_eq!(frontend.port, Some(8000));
    assert_eq!(frontend.sampling_defaults, SamplingSource::Off);
    let address = |text: &str| text.parse::<SocketAddr>().expect("an address");
    assert_eq!(
        frontend.worker_at,
        [
            (7, address("127.0.0.1:9000")),
            (2, address("127.0.0.1:9001")),
            (3, address("127.0.0.1:9002")),
        ]
    );
    assert_eq!(
        refused("frontend --worker-at 127.0.0.1 --router round-robin").kind(),
        ErrorKind::ValueValidation
    );
}

#[test]
fn the_gateway_flags_set_keys_metrics_the_body_limit_and_the_response_store() {
    let serve = options("").expect("valid");
    assert_eq!(serve.migration_limit, 3);
    let frontend =
        options("frontend --registry r --router approx-kv --migration-limit 0").expect("valid");
    assert_eq!(frontend.migration_limit, 0);
    assert_eq!(serve.retries, 0);
    let retrying = options("frontend --registry r --router approx-kv --retries 2").expect("valid");
    assert_eq!(retrying.retries, 2);
    assert_eq!(serve.stall_timeout, 120);
    assert_eq!(serve.request_timeout, 0);
    let unwatched = options("frontend --registry r --router approx-kv --stall-timeout 0");
    assert_eq!(unwatched.expect("valid").stall_timeout, 0);
    assert_eq!(serve.health().max_ejected_percent, 100);
    let capped = options("--max-ejected-percent 50").expect("valid");
    assert_eq!(capped.health().max_ejected_percent, 50);
    let over = refused("--max-ejected-percent 101");
    assert_eq!(over.kind(), ErrorKind::ValueValidation);
    assert_eq!(serve.drain_timeout, 30);
    let worker = options("worker --registry r --drain-timeout 5").expect("valid");
    let frontend = options("frontend --registry r --router approx-kv --drain-timeout 7");
    assert_eq!(worker.drain_timeout, 5);
    assert_eq!(frontend.expect("valid").drain_timeout, 7);
    assert_eq!(
        (serve.api_key_file, serve.open_metrics, serve.body_limit),
        (None, false, 16 << 20)
    );
    assert_eq!(serve.response_store_bytes, 64 << 20);
    for line in [
        "--api-key-file keys.txt --open-metrics --body-limit 1024 --response-store-mib 0",
        "frontend --registry r --router approx-kv --api-key-file keys.txt --open-metrics \
         --body-limit 1024 --response-store-mib 0",
    ] {
        let options = options(line).expect("valid");
        assert!(
            options
                .api_key_file
                .is_some_and(|file| file.ends_with("keys.txt"))
        );
        assert_eq!((options.open_metrics, options.body_limit), (true, 1024));
        assert_eq!(options.response_store_bytes, 0);
    }
    let error = refused("worker --api-key-file keys.txt");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
    assert_eq!(serve.response_store, None);
    let shared = options("frontend --registry r --router approx-kv --response-store file:///srv/r");
    let url = shared.expect("valid").response_store.map(String::from);
    assert_eq!(url.as_deref(), Some("file:///srv/r"));
    let both = refused("--response-store file:///srv/r --response-store-mib 8");
    assert_eq!(both.kind(), ErrorKind::ArgumentConflict);
    let unknown = refused("--response-store gs://bucket/r");
    assert_eq!(unknown.kind(), ErrorKind::ValueValidation);
}

#[test]
fn a_breaker_is_put_on_each_worker_only_when_asked_for() {
    use std::time::Duration;

    use dynamo_core::layers::{CircuitBreakerConfig, FailureRate};

    assert_eq!(options("").expect("valid").breaker, None);
    let in_a_row = options("--breaker-failures 3 --breaker-cool-down 9").expect("valid");
    let expected = CircuitBreakerConfig::default()
        .failure_threshold(3)
        .cool_down(Duration::from_secs(9));
    assert_eq!(in_a_row.breaker, Some(expected));
    let args = "frontend --registry r --router approx-kv --breaker-failure-rate 4/8";
    let rate = options(args).expect("valid").breaker.expect("a breaker");
    let expected = FailureRate {
        failures: 4,
        window: 8,
    };
    assert_eq!(rate.failure_rate, Some(expected));
    assert_eq!(rate.failure_threshold, u32::MAX, "only the window opens it");
    assert_eq!(rate.cool_down, Duration::from_secs(5));
    for args in [
        "--breaker-failures 0",
        "--breaker-failure-rate 9/8",
        "--breaker-failure-rate 0/8",
        "--breaker-failure-rate half",
    ] {
        assert_eq!(refused(args).kind(), ErrorKind::ValueValidation, "{args}");
    }
}

#[test]
fn the_planner_passes_the_flags_after_a_double_dash_to_its_workers() {
    let planner = options(
        "planner --registry r --nats nats://n --interval 2 --max-workers 3 \
                           -- --engine mocker --speedup 2",
    )
    .expect("valid");
    let Command::Planner(settings) = planner.command else {
        panic!("not the planner: {:?}", planner.command);
    };
    assert_eq!(
        (
            settings.interval_s,
            settings.min_workers,
            settings.max_workers
        ),
        (2.0, 1, 3)
    );
    assert_eq!(
        settings.worker_flags,
        ["--engine", "mocker", "--speedup", "2"]
    );
    assert!(!settings.disaggregated);
    assert_eq!(
        (settings.budget, settings.gpus, settings.predictor),
        (None, WorkerGpus::default(), PredictorKind::Constant)
    );
    assert_eq!(settings.restart_backoff, RestartBackoff::default());
    let missing = refused("planner --registry r");
    assert_eq!(missing.kind(), ErrorKind::MissingRequiredArgument);
    let unregistered = refused("planner --nats n");
    assert_eq!(unregistered.kind(), ErrorKind::MissingRequiredArgument);
    let etcd = options("planner --etcd http://e:2379 --nats n --disaggregated").expect("valid");
    let Command::Planner(settings) = etcd.command else {
        panic!("not the planner: {:?}", etcd.command);
    };
    assert!(settings.disaggregated);
    let budgeted = options(
        "planner --etcd http://e:2379 --nats n --disaggregated --max-workers 4 --budget 6 \
         --predictor kalman --decode-gpus 2",
    )
    .expect("valid");
    let Command::Planner(settings) = budgeted.command else {
        panic!("not the planner: {:?}", budgeted.command);
    };
    assert_eq!(
        (settings.budget, settings.predictor),
        (Some(6), PredictorKind::Kalman)
    );
    let gpus = WorkerGpus {
        decode: 2,
        ..WorkerGpus::default()
    };
    assert_eq!(settings.gpus, gpus);
    // One prefill and one decode worker of four GPUs need 5: a budget of 4 cannot pay.
    let unaffordable =
        refused("planner --registry r --nats n --disaggregated --decode-gpus 4 --budget 4");
    assert_eq!(unaffordable.kind(), ErrorKind::ArgumentConflict);
    assert!(
        unaffordable
            .to_string()
            .contains("below the 5 GPUs of the least pools"),
        "{unaffordable}"
    );
    let no_gpu = refused("planner --registry r --nats n --disaggregated --prefill-gpus 0");
    assert_eq!(no_gpu.kind(), ErrorKind::ValueValidation);
    // A role's GPUs only where the deployment has that role.
    let no_prefill_pool = refused("planner --registry r --nats n --prefill-gpus 2");
    assert_eq!(no_prefill_pool.kind(), ErrorKind::MissingRequiredArgument);
    let no_aggregated_pool =
        refused("planner --registry r --nats n --disaggregated --worker-gpus 2");
    assert_eq!(no_aggregated_pool.kind(), ErrorKind::ArgumentConflict);
    let quick =
        options("planner --registry r --nats n --restart-backoff 2 --restart-backoff-max 8")
            .expect("valid");
    let Command::Planner(settings) = quick.command else {
        panic!("not the planner: {:?}", quick.command);
    };
    let seconds = |s| std::time::Duration::from_secs(s);
    assert_eq!(
        [1, 2, 3, 4].map(|failures| settings.restart_backoff.wait_after(failures)),
        [seconds(2), seconds(4), seconds(8), seconds(8)]
    );
    let unknown = refused("planner --registry r --nats n --predictor prophet");
    assert_eq!(unknown.kind(), ErrorKind::ValueValidation);
    let upside_down = refused("planner --registry r --nats n --min-workers 3 --max-workers 2");
    assert_eq!(upside_down.kind(), ErrorKind::ArgumentConflict);
    let message = upside_down.to_string();
    assert!(
        message.contains("--min-workers is above --max-workers"),
        "{message}"
    );
    let no_profile = refused("planner --registry r --nats n --policy sla");
    assert_eq!(no_profile.kind(), ErrorKind::MissingRequiredArgument);
    let sla = options("planner --registry r --nats n --policy sla --profile p.json --ttft-ms 300")
        .expect("valid");
    let Command::Planner(settings) = sla.command else {
        panic!("not the planner: {:?}", sla.command);
    };
    assert_eq!(
        (settings.policy.as_str(), settings.targets.ttft_ms),
        ("sla", 300.0)
    );
}

#[test]
fn only_a_worker_follows_its_parent_and_only_when_asked() {
    assert!(!options("worker").expect("valid").exit_with_parent);
    assert!(
        options("worker --exit-with-parent")
            .expect("valid")
            .exit_with_parent
    );
    let error = refused("frontend --registry r --exit-with-parent");
    assert_eq!(error.kind(), ErrorKind::UnknownArgument);
}

#[test]
fn busy_thresholds_and_the_wait_queue_are_off_until_given() {
    use dynamo_router::{BusyThresholds, QueueOrder};

    for args in ["", "frontend --registry r --router approx-kv"] {
        let parsed = options(args).expect("valid");
        assert_eq!(parsed.busy_thresholds(), Ok(BusyThresholds::default()));
        assert_eq!(parsed.busy.queue(), (QueueOrder::Fcfs, 1024), "{args}");
    }
    let serve = options(
        "--engine mocker --kv-blocks 1000 --active-requests-threshold 8 \
         --active-prefill-tokens-threshold 10000 --active-decode-blocks-threshold 0.85 \
         --router-queue-size 0 --router-queue-policy shortest-uncached-first",
    )
    .expect("valid");
    assert_eq!(
        serve.busy_thresholds(),
        Ok(BusyThresholds {
            max_active_requests: Some(8),
            max_prefill_tokens: Some(10_001),
            max_decode_blocks: Some(851),
            max_decode_share: None,
        })
    );
    assert_eq!(serve.busy.queue(), (QueueOrder::ShortestUncachedFirst, 0));
    // Candle workers' default cache is 512 blocks.
    let candle = options("--active-decode-blocks-threshold 0.5").expect("valid");
    let blocks = candle.busy_thresholds().map(|t| t.max_decode_blocks);
    assert_eq!(blocks, Ok(Some(257)));
    let frontend = options(
        "frontend --registry r --router approx-kv --active-decode-blocks-threshold 400 \
         --active-requests-threshold 1 --router-queue-size 16",
    )
    .expect("valid");
    let thresholds = frontend.busy_thresholds().expect("blocks, not a fraction");
    assert_eq!(
        (thresholds.max_active_requests, thresholds.max_decode_blocks),
        (Some(1), Some(401))
    );
    assert_eq!(frontend.busy.queue().1, 16);
    // A frontend's workers' caches are known only at run time: a fraction is a share of each.
    let frontend =
        options("frontend --registry r --router approx-kv --active-decode-blocks-threshold 0.85")
            .expect("valid");
    let thresholds = frontend.busy_thresholds().expect("a share");
    assert_eq!(
        (thresholds.max_decode_blocks, thresholds.max_decode_share),
        (None, Some(0.85))
    );
}

#[test]
fn busy_thresholds_refuse_what_cannot_work() {
    for args in [
        "--active-requests-threshold 0",
        "--active-prefill-tokens-threshold 0",
        "--active-decode-blocks-threshold 0",
        "--active-decode-blocks-threshold 1.5",
        "--active-decode-blocks-threshold=-1",
        "--router-queue-size=-1",
        "frontend --registry r --active-requests-threshold 0",
    ] {
        assert_eq!(refused(args).kind(), ErrorKind::ValueValidation, "{args}");
    }
    let error = refused("--active-decode-blocks-threshold 1.5").to_string();
    assert!(
        error.contains("a fraction above 0 and at most 1"),
        "{error}"
    );
    assert_eq!(
        refused("--router-queue-policy lifo").kind(),
        ErrorKind::InvalidValue
    );
    // Echo workers hold no cache: a fraction is refused with them.
    let error = refused("--engine echo --router approx-kv --active-decode-blocks-threshold 0.85");
    assert_eq!(error.kind(), ErrorKind::ArgumentConflict);
    assert!(
        error.to_string().contains("give a number of blocks"),
        "{error}"
    );
    // Flags of the routers: a worker has none.
    assert_eq!(
        refused("worker --active-requests-threshold 1").kind(),
        ErrorKind::UnknownArgument
    );
}

#[test]
fn the_planner_scales_kubernetes_deployments_one_per_pool_and_starts_no_workers() {
    let planner = "planner --etcd http://e:2379 --nats n";
    let refusal = |flags: &str| refused(&format!("{planner} {flags}")).to_string();
    if cfg!(feature = "kube") {
        let options = options(&format!(
            "{planner} --disaggregated --kubernetes-namespace dynamo \
             --kubernetes-deployment prefill=p --kubernetes-deployment decode=d"
        ))
        .expect("valid");
        let Command::Planner(settings) = options.command else {
            panic!("not the planner: {:?}", options.command);
        };
        let kubernetes = settings.kubernetes.as_ref().expect("the Deployments");
        assert_eq!(kubernetes.namespace.as_deref(), Some("dynamo"));
        assert_eq!(kubernetes.deployments.len(), 2);
        assert_eq!(kubernetes.resource, None);
        let one_each = refusal("--disaggregated --kubernetes-deployment p");
        assert!(one_each.contains("prefill=NAME"), "{one_each}");
        let one = refusal("--kubernetes-deployment a --kubernetes-deployment b");
        assert!(one.contains("one --kubernetes-deployment NAME"), "{one}");
    } else {
        let without = refusal("--kubernetes-deployment llama");
        assert!(without.contains("--features kube"), "{without}");
    }
    // Workers are the Deployments' pods: the planner takes no flags for workers of its own.
    let worker_flags = refused(&format!(
        "{planner} --kubernetes-deployment llama -- --engine mocker"
    ));
    assert_eq!(worker_flags.kind(), ErrorKind::ArgumentConflict);
    let unknown = refusal("--kubernetes-deployment mixed=llama");
    assert!(unknown.contains("`mixed` is not a pool"), "{unknown}");
    let namespace = refused(&format!("{planner} --kubernetes-namespace dynamo"));
    assert_eq!(namespace.kind(), ErrorKind::MissingRequiredArgument);
    let kind = "--kubernetes-resource dynamographdeployments.v1alpha1.nvidia.com";
    let resource = refused(&format!("{planner} {kind}"));
    assert_eq!(resource.kind(), ErrorKind::MissingRequiredArgument);
    let unqualified = refusal("--kubernetes-deployment llama --kubernetes-resource graphs");
    assert!(
        unqualified.contains("PLURAL.VERSION.GROUP"),
        "{unqualified}"
    );
}

#[test]
fn kubernetes_discovery_replaces_etcd_and_the_directory_for_every_process() {
    let processes = [
        "worker --engine mocker",
        "frontend --router approx-kv",
        "planner --nats n",
    ];
    for process in processes {
        let flags = format!("{process} --kubernetes-discovery --kubernetes-namespace serving");
        if cfg!(feature = "kube") {
            let options = options(&flags).expect("valid");
            assert!(options.kubernetes_discovery, "{flags}");
            assert_eq!(options.kubernetes_namespace.as_deref(), Some("serving"));
        } else {
            let without = refused(&flags).to_string();
            assert!(without.contains("--features kube"), "{without}");
        }
        for other in ["--etcd http://e:2379", "--registry /tmp/workers"] {
            let both = refused(&format!("{process} --kubernetes-discovery {other}"));
            assert_eq!(
                both.kind(),
                ErrorKind::ArgumentConflict,
                "{process} {other}"
            );
        }
    }
    let static_too = refused("frontend --kubernetes-discovery --worker-at 127.0.0.1:9000");
    assert_eq!(static_too.kind(), ErrorKind::ArgumentConflict);
    // The namespace alone names nothing to look in.
    let alone = refused("frontend --worker-at 127.0.0.1:9000 --kubernetes-namespace serving");
    assert_eq!(alone.kind(), ErrorKind::MissingRequiredArgument);
}

#[test]
fn prompt_logprobs_are_offered_only_where_every_engine_computes_them() {
    let offered = |args: &str| {
        options(args)
            .unwrap_or_else(|error| panic!("{args}: {error}"))
            .computes_prompt_logprobs()
    };
    assert!(offered(""), "the main job's own candle workers");
    assert!(!offered("--engine mocker"));
    assert!(!offered("--prefill-workers 1 --decode-workers 1"));
    let vllm = "frontend --router approx-kv --engine-at vllm=http://127.0.0.1:8001";
    assert!(offered(vllm));
    assert!(offered(&format!(
        "{vllm} --engine-at vllm=http://127.0.0.1:8002"
    )));
    assert!(offered(&format!(
        "{vllm} --engine-at sglang=http://127.0.0.1:8002"
    )));
    assert!(!offered(&format!(
        "{vllm} --engine-at openai=http://127.0.0.1:8002"
    )));
    assert!(!offered(&format!(
        "{vllm} --engine-at trtllm=http://127.0.0.1:8002"
    )));
    assert!(
        !offered(&format!("{vllm} --registry r")),
        "workers may join"
    );
    assert!(!offered("frontend --router approx-kv --registry r"));
}
