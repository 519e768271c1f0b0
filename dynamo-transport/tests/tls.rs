//! The request plane over TLS: a worker with a certificate from the deployment's authority
//! answers; a client that does not trust it, a plain-TCP client, and (with mutual TLS) a client
//! without a certificate from that authority get nothing from it.

use std::net::SocketAddr;

use dynamo_core::{EchoEngine, EngineExt, ErrorClass, GenerateRequest};
use dynamo_transport::local::LocalAuthority;
use dynamo_transport::tcp::{PlaneTls, RemoteEngine};
use dynamo_transport::{Tcp, Transport};

fn tls(authority: &LocalAuthority, names: &[&str]) -> PlaneTls {
    let identity = authority.issue(names).expect("a certificate");
    PlaneTls::from_pem(
        authority.pem().as_bytes(),
        identity.cert.as_bytes(),
        identity.key.as_bytes(),
    )
    .expect("usable TLS")
}

async fn serve(transport: &Tcp) -> SocketAddr {
    let served = transport
        .serve(EchoEngine::new().boxed_engine())
        .await
        .expect("served");
    tokio::spawn(served.serving);
    served.address.parse().expect("an address")
}

fn request() -> GenerateRequest {
    GenerateRequest::new("r1", "echo", vec![7, 8, 9]).with_max_tokens(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_certificate_answers_over_tls() {
    let authority = LocalAuthority::new().expect("an authority");
    let worker = Tcp::new().tls(tls(&authority, &["127.0.0.1"]));
    let address = serve(&worker).await;

    let frontend = Tcp::new().tls(tls(&authority, &["frontend"]));
    let mut remote = frontend
        .connect(&address.to_string())
        .await
        .expect("connected over TLS");
    let answer = remote.generate_all(request()).await.expect("an answer");
    assert_eq!(answer.tokens, [7, 8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_certificate_the_client_does_not_trust_is_refused() {
    let ours = LocalAuthority::new().expect("an authority");
    let theirs = LocalAuthority::new().expect("an authority");
    let impostor = Tcp::new().tls(tls(&theirs, &["127.0.0.1"]));
    let address = serve(&impostor).await;

    let error = RemoteEngine::connect_tls(address, 1, &tls(&ours, &["frontend"]))
        .await
        .expect_err("refused");
    assert_eq!(error.class(), ErrorClass::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_address_is_refused_unless_a_shared_name_is_checked() {
    let authority = LocalAuthority::new().expect("an authority");
    let worker = Tcp::new().tls(tls(&authority, &["dynamo-worker"]));
    let address = serve(&worker).await;

    let by_address = tls(&authority, &["frontend"]);
    let error = RemoteEngine::connect_tls(address, 1, &by_address)
        .await
        .expect_err("127.0.0.1 is not in the certificate");
    assert_eq!(error.class(), ErrorClass::Unavailable);

    let by_name = by_address.verify_name("dynamo-worker").expect("a name");
    let mut remote = RemoteEngine::connect_tls(address, 1, &by_name)
        .await
        .expect("connected");
    let answer = remote.generate_all(request()).await.expect("an answer");
    assert_eq!(answer.tokens, [7, 8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_gets_nothing_from_a_tls_worker() {
    let authority = LocalAuthority::new().expect("an authority");
    let worker = Tcp::new().tls(tls(&authority, &["127.0.0.1"]));
    let address = serve(&worker).await;

    // The TCP connection opens, but the worker reads a TLS handshake, not frames.
    let mut plain = RemoteEngine::connect(address).await.expect("TCP connects");
    let error = plain
        .generate_all(request())
        .await
        .expect_err("no answer over plain TCP");
    assert_eq!(error.class(), ErrorClass::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_clients_with_a_certificate_from_the_authority_are_served() {
    let authority = LocalAuthority::new().expect("an authority");
    let worker = tls(&authority, &["127.0.0.1"])
        .mutual(true)
        .expect("mutual");
    let address = serve(&Tcp::new().tls(worker)).await;

    let member = tls(&authority, &["frontend"]);
    let mut remote = RemoteEngine::connect_tls(address, 1, &member)
        .await
        .expect("connected");
    let answer = remote.generate_all(request()).await.expect("an answer");
    assert_eq!(answer.tokens, [7, 8, 9]);

    // A client whose certificate comes from another authority (it still trusts the worker):
    // with TLS 1.3 its handshake may finish before the worker checks the certificate, so the
    // refusal shows at the connection or at the first request.
    let stranger = LocalAuthority::new().expect("an authority");
    let outsider_identity = stranger.issue(&["outsider"]).expect("a certificate");
    let outsider = PlaneTls::from_pem(
        authority.pem().as_bytes(),
        outsider_identity.cert.as_bytes(),
        outsider_identity.key.as_bytes(),
    )
    .expect("usable TLS");
    let refused = match RemoteEngine::connect_tls(address, 1, &outsider).await {
        Err(error) => error,
        Ok(mut remote) => remote
            .generate_all(request())
            .await
            .expect_err("refused at the first request"),
    };
    assert_eq!(refused.class(), ErrorClass::Unavailable);
}

#[test]
fn unusable_pem_is_a_clear_error() {
    let authority = LocalAuthority::new().expect("an authority");
    let identity = authority.issue(&["127.0.0.1"]).expect("a certificate");
    let pem = authority.pem();
    let error = PlaneTls::from_pem(b"", identity.cert.as_bytes(), identity.key.as_bytes())
        .expect_err("no authority");
    assert!(error.to_string().contains("the authority"), "{error}");
    let error = PlaneTls::from_pem(pem.as_bytes(), identity.cert.as_bytes(), b"not a key")
        .expect_err("no key");
    assert!(error.to_string().contains("the key"), "{error}");
    let other = authority.issue(&["127.0.0.1"]).expect("a certificate");
    let error = PlaneTls::from_pem(
        pem.as_bytes(),
        identity.cert.as_bytes(),
        other.key.as_bytes(),
    )
    .expect_err("a key that is not the certificate's");
    assert_eq!(error.name(), "bad_tls");
    assert!(
        !format!(
            "{:?}",
            PlaneTls::from_pem(
                pem.as_bytes(),
                identity.cert.as_bytes(),
                identity.key.as_bytes()
            )
            .expect("usable")
        )
        .contains("PRIVATE")
    );
}
