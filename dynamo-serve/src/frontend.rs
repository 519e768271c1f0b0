//! `dynamo-serve frontend`: the gateway and router over the workers that discovery reports,
//! with their KV events and load from NATS.

use dynamo_core::{BlockSize, WorkerId};
use dynamo_openai::GgufMetadata;
use dynamo_transport::discovery::{Discovery, StaticDiscovery, WorkerRecord};
use dynamo_transport::events::{EventPlane, LoadReport};

mod engine_at;
mod load_metrics;
mod traffic_reports;

use crate::deploy::Pool;
use crate::options::Options;
use crate::{deploy, disagg, engines};
pub(crate) use traffic_reports::TRAFFIC_EVERY;
use traffic_reports::TrafficReports;

pub(crate) async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = crate::install_metrics()?;
    let model_file = engines::model_file(options.model.as_deref()).await?;
    let metadata = GgufMetadata::open(&model_file)?;
    let block_size = BlockSize::new(options.block_size)?;
    let nats = match &options.nats {
        Some(url) => {
            let nats = crate::connect_nats(&options, url).await?;
            crate::log_nats_connection("frontend", &nats);
            Some(nats)
        }
        None => None,
    };
    // The same assembly as the single process (`deploy`), over TCP and NATS.
    // Two pools: prefill workers, and the decode and aggregated workers. With no prefill
    // worker registered every request goes to the second, as in aggregated serving.
    let layout = disagg::layout_of_file(&options, &model_file)?;
    // The two pools' routers read one KV index (`deploy::start_router`). Each shares its state
    // with the same pool's routers of the other frontends: the decode pool's in the namespace,
    // the prefill pool's within it, so that neither books the other's requests.
    let prefill_plane = nats.as_ref().map(|nats| nats.within("prefill"));
    let decode_share = nats.as_ref().map(|nats| (nats, "aggregated/decode"));
    let prefill_share = prefill_plane.as_ref().map(|plane| (plane, "prefill"));
    let events = nats.as_ref();
    let (prefill, decode) = if options.engine_at.is_empty() {
        let (decode, index) =
            deploy::start_shared_router(&options, events, decode_share, None).await?;
        let (prefill, _) =
            deploy::start_shared_router(&options, events, prefill_share, index).await?;
        (prefill, decode)
    } else {
        // Engine servers join the decode pool, their KV events into the index.
        let loads = engine_at::ReportedLoads::default();
        let (decode, index) =
            engine_at::start_router(&options, events, decode_share, &loads, None).await?;
        let (prefill, _) =
            engine_at::start_router(&options, events, prefill_share, &loads, index.clone()).await?;
        engine_at::attach(&options, &metadata, &decode, index.as_ref(), &loads).await?;
        (prefill, decode)
    };
    if let Some(nats) = &nats {
        let reports = nats.subscribe::<LoadReport>().await?;
        let routers = [prefill.clone(), decode.clone()];
        tokio::spawn(load_metrics::record_load(reports, routers));
    }
    let (discovery, found) = discovery(&options, block_size).await?;
    let pool = Pool::Prefill(layout.clone());
    let plane = crate::tls::request_plane(options.plane_tls.as_ref())?;
    deploy::follow(&options, &prefill, plane.clone(), discovery.as_ref(), pool)?;
    let pool = Pool::Decode(layout);
    deploy::follow(&options, &decode, plane, discovery.as_ref(), pool)?;
    let engine = deploy::shed_load(&options, disagg::router(&options, prefill, decode)?);
    let traffic = nats.clone().map(TrafficReports::start);
    let engine = match &traffic {
        Some(traffic) => traffic.count(engine),
        None => engine,
    };
    let served = crate::serve_gateway(&options, &metadata, engine, metrics, |base| {
        let found = match options.engine_at.len() {
            0 => found,
            servers => format!("{found} and {servers} engine servers given with --engine-at"),
        };
        println!(
            "dynamo frontend on {base}: model `{}`, {found}, {}",
            options.name,
            options.router.describe()
        );
        crate::print_examples(&options.name, base);
    })
    .await;
    if let Some(traffic) = traffic {
        traffic.finish().await;
    }
    served
}

/// The registry `--etcd`, `--registry`, `--kubernetes-discovery` or `--worker-at` names, and
/// how the start-up line names the workers it finds.
async fn discovery(
    options: &Options,
    block_size: BlockSize,
) -> Result<(Box<dyn Discovery>, String), Box<dyn std::error::Error>> {
    let static_workers = format!("{} workers given with --worker-at", options.worker_at.len());
    Ok(match deploy::registry(options).await? {
        Some((registry, name)) => (registry, format!("workers from {name}")),
        None => (
            Box::new(StaticDiscovery::new(
                options
                    .worker_at
                    .iter()
                    .map(|&(id, address)| WorkerRecord {
                        id: WorkerId::new(id),
                        address: address.to_string(),
                        model: options.name.clone(),
                        block_size: block_size.get(),
                        role: dynamo_core::WorkerRole::Aggregated,
                        kv_layout: None,
                    })
                    .collect(),
            )),
            static_workers,
        ),
    })
}
