//! Observability and deployment: /metrics after real transactions, health
//! probes, W3C trace context reaching participants (also on a retry by a
//! fresh instance after a crash), TLS end to end (mutual, both ways; to an
//! HTTP/JSON participant over HTTPS too) and retention deleting only what
//! is old and final.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use concord_proto::participant::v1::participant_server::{Participant, ParticipantServer};
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use concord_proto::v1::coordinator_client::CoordinatorClient;
use concord_proto::v1::registry_client::RegistryClient;
use concord_proto::v1::{self as pb, TransactionStatus as S};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status};

use crate::harness::*;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// One call as a [`Recorder`] saw it.
#[derive(Debug, Clone)]
struct Seen {
    gid: String,
    phase: &'static str,
    header: Option<String>,
    body: Option<String>,
}

/// A participant that records the trace context of every call; the first
/// Confirm of each transaction hangs when `hang_first_confirm` is set.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    hang_first_confirm: bool,
}

impl Recorder {
    fn record(&self, phase: &'static str, r: &Request<BranchRequest>) -> usize {
        let mut seen = self.seen.lock().unwrap();
        seen.push(Seen {
            gid: r.get_ref().gid.clone(),
            phase,
            header: r
                .metadata()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: r.get_ref().metadata.get("traceparent").cloned(),
        });
        seen.iter()
            .filter(|s| s.gid == r.get_ref().gid && s.phase == phase)
            .count()
    }

    fn seen(&self, phase: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.phase == phase).cloned().collect()
    }

    async fn wait_for(&self, phase: &str, n: usize) -> Vec<Seen> {
        for _ in 0..200 {
            let seen = self.seen(phase);
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} {phase} calls: {:?}", self.seen(phase));
    }

    /// Serves on a loopback port, with TLS when given; returns the address.
    async fn serve(&self, tls: Option<ServerTlsConfig>, stop: CancellationToken) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap();
        }
        let router = builder.add_service(ParticipantServer::new(self.clone()));
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    stop.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        addr
    }
}

type Reply = Result<Response<BranchResponse>, Status>;

#[tonic::async_trait]
impl Participant for Recorder {
    async fn r#try(&self, r: Request<BranchRequest>) -> Reply {
        self.record("try", &r);
        Ok(Response::new(BranchResponse::default()))
    }
    async fn confirm(&self, r: Request<BranchRequest>) -> Reply {
        if self.record("confirm", &r) == 1 && self.hang_first_confirm {
            std::future::pending::<()>().await;
        }
        Ok(Response::new(BranchResponse::default()))
    }
    async fn cancel(&self, r: Request<BranchRequest>) -> Reply {
        self.record("cancel", &r);
        Ok(Response::new(BranchResponse::default()))
    }
    async fn execute(&self, r: Request<BranchRequest>) -> Reply {
        self.record("execute", &r);
        Ok(Response::new(BranchResponse::default()))
    }
    async fn compensate(&self, r: Request<BranchRequest>) -> Reply {
        self.record("compensate", &r);
        Ok(Response::new(BranchResponse::default()))
    }
}

async fn register(registry: &mut Reg, name: &str, endpoint: String) {
    registry
        .register_participant(pb::RegisterParticipantRequest {
            protocol: Default::default(),
            name: name.to_string(),
            endpoint,
            actions: ["debit", "refund"]
                .iter()
                .map(|a| pb::Action {
                    name: a.to_string(),
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .unwrap();
}

/// Begin, Try and Commit (waiting), with `traceparent` as a header of Begin.
async fn committed_tx(c: &mut Coord, participant: &str) -> String {
    let mut begin = Request::new(begin_req("", Some(Duration::from_secs(30))));
    begin
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let gid = c.begin(begin).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, participant, "debit")).await.unwrap();
    let reply = commit_tx(c, &gid, true).await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    gid
}

/// `GET path` over HTTP/1.1: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The sum of every series of `name` whose labels include `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let have: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
            labels
                .iter()
                .all(|(k, v)| have.contains(&format!("{k}=\"{v}\"").as_str()))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn metrics_move_after_transactions_and_probes_answer(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let http = coord.metrics_addr.expect("metrics listener bound");
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!((code, body.trim()), (200, "ready"));

    // Counters are process-wide and other tests run alongside: compare
    // deltas, or series only this test's participant name can have.
    let before = http_get(http, "/metrics").await.1;
    let recorder = Recorder::default();
    let stop = CancellationToken::new();
    let addr = recorder.serve(None, stop.clone()).await;
    // Run once per store in one process: each run has its own name.
    let name = match &db {
        TestDb::Postgres(_) => "obs-metrics-bank-pg",
        TestDb::Sqlite(_) => "obs-metrics-bank-sqlite",
    };
    register(&mut coord.registry().await, name, format!("http://{addr}")).await;
    let mut c = coord.client().await;
    for _ in 0..3 {
        committed_tx(&mut c, name).await;
    }
    let gid = c.begin(begin_req("", None)).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, name, "debit")).await.unwrap();
    rollback_tx(&mut c, &gid, "test", true).await.unwrap();

    let after = http_get(http, "/metrics").await.1;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        metric(&after, name, labels) - metric(&before, name, labels)
    };
    assert!(
        delta("concord_transactions_begun_total", &[("mode", "tcc")]) >= 4.0,
        "{after}"
    );
    assert!(
        delta(
            "concord_transactions_finished_total",
            &[("mode", "tcc"), ("status", "confirmed")]
        ) >= 3.0
    );
    assert!(
        delta(
            "concord_transactions_finished_total",
            &[("mode", "tcc"), ("status", "cancelled")]
        ) >= 1.0
    );
    let calls = |phase, outcome| {
        metric(
            &after,
            "concord_participant_call_duration_seconds_count",
            &[
                ("participant", name),
                ("phase", phase),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("try", "ok"), 4.0, "{after}");
    assert_eq!(calls("confirm", "ok"), 3.0);
    assert_eq!(calls("cancel", "ok"), 1.0);
    assert!(
        delta(
            "concord_grpc_request_duration_seconds_count",
            &[("method", "Begin"), ("code", "OK")]
        ) >= 4.0
    );
    // Sampled when the server started: present even if another test's
    // database set them last.
    for gauge in [
        "concord_transactions_open",
        "concord_transactions_needs_attention",
        "concord_oldest_open_transaction_age_seconds",
        "concord_db_pool_connections",
        "concord_leases_held",
    ] {
        assert!(after.contains(&format!("\n{gauge}")), "{gauge} missing");
    }
    assert!(after.contains("# TYPE concord_participant_call_duration_seconds histogram"));
    assert!(!after.contains(&gid), "a gid is never a label");
    stop.cancel();
}

async fn traceparent_reaches_participants_first_time_and_after_a_crash(db: TestDb) {
    let recorder = Recorder {
        hang_first_confirm: true,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let addr = recorder.serve(None, stop.clone()).await;
    let first = TestCoordinator::start(&db).await;
    register(
        &mut first.registry().await,
        "obs-trace",
        format!("http://{addr}"),
    )
    .await;
    let mut c = first.client().await;
    let mut begin = Request::new(begin_req("", Some(Duration::from_secs(30))));
    begin
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let gid = c.begin(begin).await.unwrap().into_inner().gid;
    c.r#try(try_req(&gid, "obs-trace", "debit")).await.unwrap();
    let tried = recorder.wait_for("try", 1).await;
    assert_eq!(tried[0].header.as_deref(), Some(TRACEPARENT));
    assert_eq!(tried[0].body.as_deref(), Some(TRACEPARENT));

    // A repeated Begin with a new span of the same trace is the same
    // transaction.
    let mut again = Request::new(begin_req(&gid, Some(Duration::from_secs(30))));
    again.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-00000000000000aa-01"
            .parse()
            .unwrap(),
    );
    c.begin(again).await.expect("a repeat, not a conflict");

    commit_tx(&mut c, &gid, false).await.unwrap();
    recorder.wait_for("confirm", 1).await;
    first.crash();

    // The retry comes from a fresh instance that knows the trace only from
    // the database.
    let fresh = TestCoordinator::start(&db).await;
    let mut c = fresh.client().await;
    wait_status(&mut c, &gid, S::Confirmed, Duration::from_secs(15)).await;
    let confirms = recorder.seen("confirm");
    assert_eq!(confirms.len(), 2, "{confirms:?}");
    for call in &confirms {
        assert_eq!(call.header.as_deref(), Some(TRACEPARENT), "{call:?}");
    }
    let tx = get_tx(&mut c, &gid).await;
    assert_eq!(
        tx.metadata.get("traceparent").map(String::as_str),
        Some(TRACEPARENT)
    );

    // Sagas take it from the SubmitSaga headers the same way.
    let mut submit = Request::new(pb::SubmitSagaRequest {
        steps: vec![pb::SagaStep {
            participant: "obs-trace".into(),
            action: "debit".into(),
            compensation: "refund".into(),
            payload: b"{}".to_vec(),
            ..Default::default()
        }],
        wait: true,
        ..Default::default()
    });
    submit
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let saga = c.submit_saga(submit).await.unwrap().into_inner();
    let executed = recorder.wait_for("execute", 1).await;
    assert_eq!(executed[0].gid, saga.gid);
    assert_eq!(executed[0].header.as_deref(), Some(TRACEPARENT));
    stop.cancel();
}

/// A CA and certificates it signed, written as PEM files.
/// A test CA issuing certificates (also used by `auth.rs`).
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub(crate) ca_pem: String,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "concord test ca");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self {
            dir: tempfile::tempdir().unwrap(),
            ca: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    /// A certificate for 127.0.0.1 and localhost, usable by servers and
    /// clients: (cert PEM, key PEM), also written as `name.crt`/`name.key`.
    pub(crate) fn issue(&self, name: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap().pem();
        let key = key.serialize_pem();
        std::fs::write(self.path(&format!("{name}.crt")), &cert).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), &key).unwrap();
        (cert, key)
    }

    pub(crate) fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    pub(crate) fn ca_file(&self) -> std::path::PathBuf {
        let path = self.path("ca.crt");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

async fn mutual_tls_from_initiator_to_coordinator_to_participant(db: TestDb) {
    let pki = Pki::new();
    pki.issue("coordinator");
    let (participant_cert, participant_key) = pki.issue("participant");
    let (initiator_cert, initiator_key) = pki.issue("initiator");
    pki.issue("coordinator-client");
    let ca = pki.ca_file();

    // The participant accepts only clients with a certificate of the CA.
    let recorder = Recorder::default();
    let stop = CancellationToken::new();
    let participant_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&participant_cert, &participant_key))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let addr = recorder.serve(Some(participant_tls), stop.clone()).await;

    let coord = TestCoordinator::start_with(&db, |c| {
        c.tls_cert = Some(pki.path("coordinator.crt"));
        c.tls_key = Some(pki.path("coordinator.key"));
        c.tls_client_ca = Some(ca.clone());
        c.participant_ca = Some(ca.clone());
        c.participant_cert = Some(pki.path("coordinator-client.crt"));
        c.participant_key = Some(pki.path("coordinator-client.key"));
    })
    .await;
    let url = format!("https://{}", coord.addr);
    let client_tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem));
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(
            client_tls
                .clone()
                .identity(Identity::from_pem(&initiator_cert, &initiator_key)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    register(
        &mut RegistryClient::with_interceptor(
            channel.clone(),
            concord::cli::Bearer::new(None).unwrap(),
        ),
        "obs-tls",
        format!("https://{addr}"),
    )
    .await;
    let mut c =
        CoordinatorClient::with_interceptor(channel, concord::cli::Bearer::new(None).unwrap());
    let gid = committed_tx(&mut c, "obs-tls").await;
    assert_eq!(recorder.seen("try").len(), 1);
    assert_eq!(recorder.seen("confirm").len(), 1);
    assert_eq!(recorder.seen("confirm")[0].gid, gid);

    // Without a client certificate, or without TLS, the coordinator is
    // out of reach.
    let anonymous = async {
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .tls_config(client_tls.clone())
            .unwrap()
            .connect()
            .await?;
        CoordinatorClient::new(channel)
            .get_transaction(pb::GetTransactionRequest {
                gid: gid.clone(),
                include_events: false,
            })
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error>)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(anonymous.await.is_err(), "no client certificate, no answer");
    let plaintext = CoordinatorClient::connect(format!("http://{}", coord.addr)).await;
    let refused = match plaintext {
        Err(_) => true,
        Ok(mut c) => c
            .get_transaction(pb::GetTransactionRequest {
                gid,
                include_events: false,
            })
            .await
            .is_err(),
    };
    assert!(refused, "plaintext is refused");
    stop.cancel();
}

/// An HTTP/JSON participant behind HTTPS that requires a client
/// certificate: the coordinator checks it against `participant_ca`,
/// presents `participant_cert`, and TCC runs over it; a coordinator that
/// does not trust the CA gets no call through.
async fn an_https_http_participant_with_mutual_tls(db: TestDb) {
    use axum::extract::Path;
    use axum::routing::post;

    let pki = Pki::new();
    let (participant_cert, participant_key) = pki.issue("participant");
    pki.issue("coordinator-client");
    let ca = pki.ca_file();

    // The participant: the HTTP/JSON contract (`POST /{action}/{phase}`),
    // served over TLS with client certificates required.
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/shop/{action}/{phase}",
        post(move |Path((action, phase)): Path<(String, String)>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(format!("{action}/{phase}"));
                "{}"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serve = tonic::transport::Server::builder()
        .accept_http1(true)
        .tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&participant_cert, &participant_key))
                .client_ca_root(Certificate::from_pem(&pki.ca_pem)),
        )
        .unwrap()
        .add_routes(tonic::service::Routes::from(app))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), stop.clone().cancelled_owned());
    tokio::spawn(serve);

    let coord = TestCoordinator::start_with(&db, |c| {
        c.participant_ca = Some(ca.clone());
        c.participant_cert = Some(pki.path("coordinator-client.crt"));
        c.participant_key = Some(pki.path("coordinator-client.key"));
    })
    .await;
    coord
        .registry()
        .await
        .register_participant(pb::RegisterParticipantRequest {
            protocol: pb::Protocol::Http as i32,
            name: "tls-shop".into(),
            endpoint: format!("https://{addr}/shop"),
            actions: vec![pb::Action {
                name: "debit".into(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let mut c = coord.client().await;
    committed_tx(&mut c, "tls-shop").await;
    assert_eq!(*calls.lock().unwrap(), ["debit/try", "debit/confirm"]);

    // Without the CA (the system's roots), the participant's certificate
    // is not trusted: the Try is not delivered. (In the first one's place,
    // on the same registry: a SQLite file admits one instance.)
    coord.shutdown();
    let untrusting = TestCoordinator::start(&db).await;
    let mut c = untrusting.client().await;
    let gid = c
        .begin(begin_req("", Some(Duration::from_secs(30))))
        .await
        .unwrap()
        .into_inner()
        .gid;
    let refused = c
        .r#try(try_req(&gid, "tls-shop", "debit"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().to_lowercase().contains("certificate"),
        "{}",
        refused.message()
    );
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "nothing reached the participant"
    );
    stop.cancel();
}

async fn retention_deletes_only_old_final_transactions(db: TestDb) {
    let recorder = Recorder::default();
    let stop = CancellationToken::new();
    let addr = recorder.serve(None, stop.clone()).await;
    let coord = TestCoordinator::start(&db).await;
    register(
        &mut coord.registry().await,
        "obs-retention",
        format!("http://{addr}"),
    )
    .await;
    let mut c = coord.client().await;
    let old_a = committed_tx(&mut c, "obs-retention").await;
    let old_b = committed_tx(&mut c, "obs-retention").await;
    let recent = committed_tx(&mut c, "obs-retention").await;
    let open = c
        .begin(begin_req("", Some(Duration::from_secs(3600))))
        .await
        .unwrap()
        .into_inner()
        .gid;
    c.r#try(try_req(&open, "obs-retention", "debit"))
        .await
        .unwrap();
    coord.shutdown();

    // Age them: two finished long ago, and an open one started long ago
    // (old but not final: it stays).
    const DAY: Duration = Duration::from_secs(24 * 3600);
    for gid in [&old_a, &old_b] {
        db.set_ago(gid, "finished_at", 8 * DAY).await;
        db.set_ago(gid, "created_at", 9 * DAY).await;
    }
    db.set_ago(&open, "created_at", 9 * DAY).await;

    let count = |table: &'static str, gid: String| {
        let db = db.clone();
        async move { db.rows_of(table, &gid).await }
    };
    assert!(count("transaction_events", old_a.clone()).await > 0);
    assert_eq!(count("branches", old_a.clone()).await, 1);

    // Batches of one: three batches, the last one short.
    let store = db.store().await;
    let deleted = concord::engine::retention::sweep(
        &*store,
        Duration::from_secs(7 * 24 * 3600),
        1,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(deleted, 2);
    for gid in [&old_a, &old_b] {
        for table in ["global_transactions", "branches", "transaction_events"] {
            assert_eq!(count(table, gid.clone()).await, 0, "{table} of {gid}");
        }
    }
    for gid in [&recent, &open] {
        assert_eq!(count("global_transactions", gid.clone()).await, 1);
        assert_eq!(count("branches", gid.clone()).await, 1);
        assert!(count("transaction_events", gid.clone()).await > 0);
    }

    // The background task of a running instance does the same.
    // (The store lets go of the database first: a SQLite file admits one.)
    drop(store);
    db.set_ago(&recent, "finished_at", Duration::from_secs(2 * 3600))
        .await;
    let coord = TestCoordinator::start_with(&db, |c| {
        c.retention = Some(Duration::from_secs(3600));
    })
    .await;
    let mut gone = false;
    for _ in 0..100 {
        if count("global_transactions", recent.clone()).await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the retention task deleted the aged transaction");
    assert_eq!(count("global_transactions", open.clone()).await, 1);
    coord.shutdown();
    stop.cancel();
}

on_both_stores!(
    an_https_http_participant_with_mutual_tls,
    retention_deletes_only_old_final_transactions,
    metrics_move_after_transactions_and_probes_answer,
    traceparent_reaches_participants_first_time_and_after_a_crash,
    mutual_tls_from_initiator_to_coordinator_to_participant,
);
