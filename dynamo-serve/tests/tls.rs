//! TLS end to end: a frontend serving HTTPS in front of a worker it reaches over mutual TLS,
//! every certificate issued by a throwaway authority.

#[expect(dead_code, reason = "this test uses a part of the shared helpers")]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_transport::local::{LocalAuthority, free_port};
use serde_json::{Value, json};
use support::{Process, issue};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// An HTTPS client that trusts `authority` alone.
fn client(authority: &LocalAuthority) -> ureq::Agent {
    let root = Certificate::from_pem(authority.pem().as_bytes()).expect("PEM");
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![root])))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// POST `body` to `url`; the status and JSON body.
fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<(u16, Value), ureq::Error> {
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string())?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_serves_https_and_reaches_its_worker_over_mutual_tls() {
    let temporary = tempfile::Builder::new()
        .prefix("dynamo-tls-")
        .tempdir()
        .expect("a temporary directory");
    let dir = temporary.path();
    let registry = dir.join("registry");
    std::fs::create_dir_all(&registry).expect("a directory");
    let authority = LocalAuthority::new().expect("an authority");
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, authority.pem()).expect("written");
    let ca = ca.display().to_string();
    let [worker_cert, worker_key] = issue(&authority, dir, "worker", &["127.0.0.1"]);
    let [frontend_cert, frontend_key] = issue(&authority, dir, "frontend", &["frontend"]);
    let [edge_cert, edge_key] = issue(&authority, dir, "edge", &["127.0.0.1", "localhost"]);
    let registry = registry.display().to_string();

    let plane = |cert: &str, key: &str| {
        let flags = [
            "--plane-tls-ca",
            &ca,
            "--plane-tls-cert",
            cert,
            "--plane-tls-key",
            key,
        ];
        flags.map(str::to_owned)
    };
    let mut worker_args = vec!["worker", "--engine", "echo", "--registry", &registry];
    let worker_plane = plane(&worker_cert, &worker_key);
    worker_args.extend(worker_plane.iter().map(String::as_str));
    worker_args.push("--plane-tls-mutual");
    let _worker = Process::start(&worker_args);

    let port = free_port().expect("a free port").to_string();
    let mut frontend_args = vec!["frontend", "--port", &port, "--registry", &registry];
    frontend_args.extend(["--router", "round-robin"]);
    frontend_args.extend(["--tls-cert", &edge_cert, "--tls-key", &edge_key]);
    let frontend_plane = plane(&frontend_cert, &frontend_key);
    frontend_args.extend(frontend_plane.iter().map(String::as_str));
    let frontend = Process::start(&frontend_args);

    let https = format!("https://127.0.0.1:{port}/v1/completions");
    let body = json!({ "model": "smollm2", "prompt": "Hello there", "max_tokens": 2 });
    let agent = client(&authority);
    let started = Instant::now();
    // Until the frontend listens and has connected to the worker.
    let answer = loop {
        let (agent, https, body) = (agent.clone(), https.clone(), body.clone());
        let tried = tokio::task::spawn_blocking(move || post(&agent, &https, &body))
            .await
            .expect("joined");
        if let Ok((200, answer)) = tried {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no answer over HTTPS: {tried:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["usage"]["completion_tokens"], 2, "{answer}");
    assert!(frontend.logged("the request plane runs over TLS"));

    // Plain HTTP on the HTTPS port gets no answer; a client that does not trust the
    // gateway's authority refuses it.
    let plain = format!("http://127.0.0.1:{port}/v1/completions");
    let stranger = LocalAuthority::new().expect("an authority");
    let (plain_agent, distrustful) = (client(&authority), client(&stranger));
    let (https_again, body_again) = (https.clone(), body.clone());
    let (plain_result, distrust_result) = tokio::task::spawn_blocking(move || {
        (
            post(&plain_agent, &plain, &body_again),
            post(&distrustful, &https_again, &body_again),
        )
    })
    .await
    .expect("joined");
    assert!(plain_result.is_err(), "{plain_result:?}");
    assert!(distrust_result.is_err(), "{distrust_result:?}");
}
