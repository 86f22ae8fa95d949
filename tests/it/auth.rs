//! Authentication and authorization end to end (issue 17), against real
//! PostgreSQL and real servers: identities from an identities file (tokens
//! and a client certificate) and from admin_tokens, scopes on the registry,
//! transactions acted on by their initiator and admins only, the
//! coordinator's token checked by an SDK participant, the loopback-only
//! default, rotation without a restart, and the per-identity rate limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use concord::auth::{AdminTokens, Secret};
use concord::cli::Bearer;
use concord::config::Config;
use concord::server::Server;
use concord_proto::v1::admin_client::AdminClient;
use concord_proto::v1::{self as pb, TransactionStatus as S};
use concord_sdk::{ParticipantServer, ParticipantService};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;

/// Two initiators (one with an old and a new token), a service that may
/// register `inventory` only, one that may register `payment`, and an
/// admin from the file; `ops:admin-secret` comes from admin_tokens.
const IDENTITIES: &str = r#"
[[identity]]
name = "checkout"
tokens = ["checkout-secret"]
initiator = true

[[identity]]
name = "billing"
tokens = ["billing-secret", "billing-secret-2"]
initiator = true

[[identity]]
name = "inventory-svc"
tokens = ["inventory-secret"]
participants = ["inventory"]

[[identity]]
name = "payment-svc"
tokens = ["payment-secret"]
participants = ["payment"]

[[identity]]
name = "auditor"
tokens = ["auditor-secret"]
admin = true

[[identity]]
name = "slow-lane"
tokens = ["slow-secret"]
initiator = true
max_rate = 2
"#;

/// The identities file in its own directory (kept while the test runs).
struct IdentitiesFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl IdentitiesFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identities.toml");
        std::fs::write(&path, text).unwrap();
        Self { _dir: dir, path }
    }

    /// Replaces the file at once (write then rename), as a secret mount does.
    fn replace(&self, text: &str) {
        let next = self.path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }
}

async fn coordinator(db: &TestDb, file: &IdentitiesFile) -> TestCoordinator {
    let path = file.path.clone();
    TestCoordinator::start_with(db, move |c| {
        c.identities_file = Some(path);
        c.admin_tokens = AdminTokens::parse_list("ops:admin-secret").unwrap();
    })
    .await
}

fn registration(name: &str, endpoint: &str) -> pb::RegisterParticipantRequest {
    pb::RegisterParticipantRequest {
        protocol: pb::Protocol::Grpc as i32,
        name: name.into(),
        endpoint: endpoint.into(),
        actions: vec![pb::Action {
            name: "debit".into(),
            ..Default::default()
        }],
    }
}

/// The endpoints registered for each participant, sorted.
async fn endpoints(coord: &TestCoordinator) -> Vec<(String, Vec<String>)> {
    let all = coord
        .registry_as(Some("admin-secret"))
        .await
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut out: Vec<_> = all
        .participants
        .into_iter()
        .map(|p| {
            let mut urls: Vec<_> = p.endpoints.into_iter().map(|e| e.url).collect();
            urls.sort();
            (p.name, urls)
        })
        .collect();
    out.sort();
    out
}

async fn registering_needs_the_scope_of_the_participant(db: TestDb) {
    let file = IdentitiesFile::new(IDENTITIES);
    let coord = coordinator(&db, &file).await;
    let payment = TestParticipant::start_on("payment", &db).await;
    coord
        .registry_as(Some("payment-secret"))
        .await
        .register_participant(registration("payment", &payment.endpoint()))
        .await
        .unwrap();
    let before = endpoints(&coord).await;
    assert_eq!(
        before,
        [("payment".to_string(), vec![payment.endpoint()])],
        "registered by its own identity"
    );

    // A credential scoped to inventory cannot put an endpoint under
    // payment's name, nor can an initiator or nobody at all.
    let thief = "http://127.0.0.1:9";
    let err = coord
        .registry_as(Some("inventory-secret"))
        .await
        .register_participant(registration("payment", thief))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("participant:payment") && err.message().contains("inventory-svc"),
        "names the missing scope: {}",
        err.message()
    );
    let err = coord
        .registry_as(Some("checkout-secret"))
        .await
        .register_participant(registration("payment", thief))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for token in [None, Some("wrong-secret")] {
        let err = coord
            .registry_as(token)
            .await
            .register_participant(registration("payment", thief))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    assert_eq!(endpoints(&coord).await, before, "nothing changed");

    // Its own participant it may register; an admin may register any.
    coord
        .registry_as(Some("inventory-secret"))
        .await
        .register_participant(registration("inventory", "http://127.0.0.1:10"))
        .await
        .unwrap();
    coord
        .registry_as(Some("auditor-secret"))
        .await
        .register_participant(registration("payment", "http://127.0.0.1:11"))
        .await
        .unwrap();
    // Listing needs an identity too.
    let err = coord
        .registry_as(None)
        .await
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn transactions_belong_to_their_initiator_and_admins(db: TestDb) {
    let file = IdentitiesFile::new(IDENTITIES);
    let coord = coordinator(&db, &file).await;
    let p = TestParticipant::start_on("payment", &db).await;
    coord
        .registry_as(Some("payment-secret"))
        .await
        .register_participant(registration("payment", &p.endpoint()))
        .await
        .unwrap();

    // Without a credential nothing begins or commits.
    let mut nobody = coord.client_as(None).await;
    let err = nobody.begin(begin_req("g-none", None)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // A participant's identity is no initiator.
    let err = coord
        .client_as(Some("payment-secret"))
        .await
        .begin(begin_req("g-none", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("initiator"), "{}", err.message());

    let mut checkout = coord.client_as(Some("checkout-secret")).await;
    checkout.begin(begin_req("g1", None)).await.unwrap();
    checkout
        .r#try(try_req("g1", "payment", "debit"))
        .await
        .unwrap();
    let err = commit_tx(&mut nobody, "g1", true).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // Another initiator can neither read, try, commit nor roll it back.
    let mut billing = coord.client_as(Some("billing-secret")).await;
    let read = billing
        .get_transaction(pb::GetTransactionRequest {
            gid: "g1".into(),
            include_events: false,
        })
        .await
        .unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied);
    let err = billing
        .r#try(try_req("g1", "payment", "debit"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = commit_tx(&mut billing, "g1", true).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = rollback_tx(&mut billing, "g1", "not mine", true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Beginning the same gid again as another identity is no repeat.
    let err = billing.begin(begin_req("g1", None)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let tx = get_tx(&mut checkout, "g1").await;
    assert_eq!(status_of(&tx), S::Trying, "nothing changed");
    assert_eq!(tx.branches.len(), 1);
    assert_eq!(p.total_calls(Ph::Try), 1);
    assert_eq!(tx.initiator, "checkout");
    assert_eq!(
        tx.events[0].message, "begun by checkout",
        "the begin event names the initiator"
    );

    // Its initiator commits; an admin reads and acts on anyone's.
    let reply = commit_tx(&mut checkout, "g1", true).await.unwrap();
    assert_eq!(reply.status, S::Confirmed as i32);
    let mut auditor = coord.client_as(Some("auditor-secret")).await;
    assert_eq!(status_of(&get_tx(&mut auditor, "g1").await), S::Confirmed);
    checkout.begin(begin_req("g2", None)).await.unwrap();
    let reply = rollback_tx(&mut auditor, "g2", "stopped by an admin", true)
        .await
        .unwrap();
    assert_eq!(reply.status, S::Cancelled as i32);
    // The operator's view shows who began it too.
    let mut admin = AdminClient::with_interceptor(
        Channel::from_shared(coord.url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        Bearer::new(Some("admin-secret")).unwrap(),
    );
    let detail = admin
        .get_transaction_detail(pb::GetTransactionDetailRequest { gid: "g1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.transaction.unwrap().initiator, "checkout");
    // The admin API needs the admin scope.
    let mut not_admin = AdminClient::with_interceptor(
        Channel::from_shared(coord.url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        Bearer::new(Some("checkout-secret")).unwrap(),
    );
    let err = not_admin
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("admin"), "{}", err.message());

    // Sagas and messages are theirs too.
    let saga = pb::SubmitSagaRequest {
        gid: "s1".into(),
        steps: vec![pb::SagaStep {
            participant: "payment".into(),
            action: "debit".into(),
            compensation: "debit".into(),
            ..Default::default()
        }],
        wait: true,
        ..Default::default()
    };
    let err = coord
        .client_as(Some("payment-secret"))
        .await
        .submit_saga(saga.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    checkout.submit_saga(saga).await.unwrap();
    assert_eq!(get_tx(&mut checkout, "s1").await.initiator, "checkout");
    let err = billing
        .get_transaction(pb::GetTransactionRequest {
            gid: "s1".into(),
            include_events: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let msg = pb::PrepareMessageRequest {
        gid: "m1".into(),
        steps: vec![pb::MessageStep {
            participant: "payment".into(),
            action: "debit".into(),
            ..Default::default()
        }],
        query_endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    checkout.prepare_message(msg).await.unwrap();
    let err = billing
        .abort_message(pb::AbortMessageRequest {
            gid: "m1".into(),
            reason: "not mine".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = billing
        .submit_message(pb::SubmitMessageRequest {
            gid: "m1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(status_of(&get_tx(&mut checkout, "m1").await), S::Prepared);
    checkout
        .abort_message(pb::AbortMessageRequest {
            gid: "m1".into(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap();
}

async fn a_rotated_token_works_without_a_restart(db: TestDb) {
    let file = IdentitiesFile::new(
        "[[identity]]\nname = \"checkout\"\ntokens = [\"old-secret\"]\ninitiator = true\n",
    );
    let coord = coordinator(&db, &file).await;
    let begins = |token: &'static str, gid: String| {
        let coord = &coord;
        async move {
            coord
                .client_as(Some(token))
                .await
                .begin(begin_req(&gid, None))
                .await
                .map(drop)
                .map_err(|s| s.code())
        }
    };
    assert_eq!(begins("old-secret", "r1".into()).await, Ok(()));
    assert_eq!(
        begins("new-secret", "r2".into()).await,
        Err(Code::Unauthenticated)
    );

    // Both during the overlap...
    file.replace(
        "[[identity]]\nname = \"checkout\"\ntokens = [\"old-secret\", \"new-secret\"]\ninitiator = true\n",
    );
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while begins("new-secret", format!("r3-{n}")).await.is_err() {
        assert!(Instant::now() < until, "the new token never worked");
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(begins("old-secret", "r4".into()).await, Ok(()));
    // ...and a transaction begun with the old one stays the identity's.
    let mut new = coord.client_as(Some("new-secret")).await;
    assert_eq!(get_tx(&mut new, "r1").await.initiator, "checkout");

    // Then the old one is dropped and stops working.
    file.replace(
        "[[identity]]\nname = \"checkout\"\ntokens = [\"new-secret\"]\ninitiator = true\n",
    );
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while begins("old-secret", format!("r5-{n}")).await.is_ok() {
        assert!(Instant::now() < until, "the old token kept working");
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        begins("old-secret", "r6".into()).await,
        Err(Code::Unauthenticated)
    );
    assert_eq!(begins("new-secret", "r7".into()).await, Ok(()));

    // A broken file keeps the identities in force.
    file.replace("[[identity]]\nname = \n");
    tokio::time::sleep(concord::auth::reload::POLL * 3).await;
    assert_eq!(begins("new-secret", "r8".into()).await, Ok(()));
}

async fn the_rate_limit_answers_resource_exhausted(db: TestDb) {
    let handle = concord::telemetry::metrics::install().expect("the recorder is ours");
    let file = IdentitiesFile::new(IDENTITIES);
    let coord = coordinator(&db, &file).await;
    let mut slow = coord.client_as(Some("slow-secret")).await;
    let mut codes = Vec::new();
    for i in 0..5 {
        let r = slow.begin(begin_req(&format!("l{i}"), None)).await;
        codes.push(r.map_or_else(|s| s.code(), |_| Code::Ok));
    }
    // A burst of max_rate (2), then refusals within the same second.
    assert_eq!(&codes[..2], [Code::Ok, Code::Ok], "{codes:?}");
    assert!(codes[2..].contains(&Code::ResourceExhausted), "{codes:?}");
    let err = slow.begin(begin_req("l9", None)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("slow-lane"), "{}", err.message());
    // Others are not slowed down.
    let mut checkout = coord.client_as(Some("checkout-secret")).await;
    for i in 0..5 {
        checkout
            .begin(begin_req(&format!("c{i}"), None))
            .await
            .unwrap();
    }
    let metrics = handle.render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("concord_identity_limited_total{")
                && l.contains("identity=\"slow-lane\"")
                && l.contains("limit=\"rate\"")),
        "{metrics}"
    );
    // After a second, it may go on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    slow.begin(begin_req("l10", None)).await.unwrap();
}

/// Starts a coordinator the way `concord serve` does (binding
/// `config.listen`), or says why it refused.
async fn serve(config: Config) -> Result<(), String> {
    match Server::build(config).await {
        Ok(server) => {
            let stop = CancellationToken::new();
            stop.cancel();
            server.run(stop.cancelled_owned()).await.unwrap();
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn without_identities_only_loopback_is_served(db: TestDb) {
    let mut config = fast_config(&db.url());
    config.listen = "0.0.0.0:0".parse().unwrap();
    let refused = serve(config.clone()).await.unwrap_err();
    assert!(
        refused.contains("without authentication") && refused.contains("insecure_no_auth"),
        "{refused}"
    );
    // The explicit opt-out starts it; so do identities.
    config.insecure_no_auth = true;
    serve(config.clone()).await.unwrap();
    config.insecure_no_auth = false;
    // The DTM API's listener follows the same rule.
    let mut dtm = config.clone();
    dtm.listen = "127.0.0.1:0".parse().unwrap();
    dtm.dtm_listen = Some("0.0.0.0:0".parse().unwrap());
    let refused = serve(dtm).await.unwrap_err();
    assert!(
        refused.contains("dtm_listen") && refused.contains("without authentication"),
        "{refused}"
    );
    config.admin_tokens = AdminTokens::parse_list("ops:admin-secret").unwrap();
    serve(config).await.unwrap();
}

async fn an_sdk_participant_accepts_only_the_coordinators_token(db: TestDb) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let service = ParticipantService::builder("stock")
        .tcc_fn(
            "reserve",
            move |_ctx| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(Vec::new()) }
            },
            |_ctx| async { Ok(Vec::new()) },
            |_ctx| async { Ok(Vec::new()) },
        )
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let file = IdentitiesFile::new(
        "[[identity]]\nname = \"stock-svc\"\ntokens = [\"stock-secret\"]\nparticipants = [\"stock\"]\n\n\
         [[identity]]\nname = \"checkout\"\ntokens = [\"checkout-secret\"]\ninitiator = true\n",
    );
    let path = file.path.clone();
    let coord = TestCoordinator::start_with(&db, move |c| {
        c.identities_file = Some(path);
        c.coordinator_token = Some(Secret::new("coordinator-secret").unwrap());
    })
    .await;
    let running = ParticipantServer::new(service)
        .register_with(coord.url())
        .token("stock-secret")
        .require_coordinator_token(["coordinator-secret"])
        .start(listener, stop.clone().cancelled_owned())
        .await
        .unwrap();
    let endpoint = running.endpoint().unwrap().to_string();

    // The coordinator presents its token: the Try runs.
    let mut checkout = coord.client_as(Some("checkout-secret")).await;
    checkout.begin(begin_req("ok-1", None)).await.unwrap();
    checkout
        .r#try(try_req("ok-1", "stock", "reserve"))
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A coordinator without the token (or anyone else) is refused before
    // any action runs. It takes the first one's place on the same database
    // (the registration is there): a SQLite file admits one instance.
    coord.shutdown();
    let other = TestCoordinator::start_with(&db, |c| {
        c.identities_file = None;
    })
    .await;
    let mut c = other.client().await;
    c.begin(begin_req("no-token-1", None)).await.unwrap();
    let err = c
        .r#try(try_req("no-token-1", "stock", "reserve"))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("UNAUTHENTICATED") || err.message().contains("coordinator token"),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no action ran");
    let mut direct = concord_proto::participant::v1::participant_client::ParticipantClient::new(
        Channel::from_shared(endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut call = tonic::Request::new(concord_proto::participant::v1::BranchRequest {
        gid: "forged".into(),
        branch_id: "1".into(),
        action: "reserve".into(),
        ..Default::default()
    });
    call.metadata_mut()
        .insert("authorization", "Bearer guessed".parse().unwrap());
    let err = direct.r#try(call).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no action ran");
    stop.cancel();
    running.wait().await.unwrap();
}

async fn a_client_certificate_maps_to_its_identity(db: TestDb) {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let pki = crate::observability::Pki::new();
    pki.issue("coordinator");
    let (cert, key) = pki.issue("checkout-instance-7");
    let (stranger_cert, stranger_key) = pki.issue("stranger");
    let ca = pki.ca_file();
    let file = IdentitiesFile::new(
        "[[identity]]\nname = \"checkout\"\ncertificates = [\"checkout-instance-7\"]\ninitiator = true\n",
    );
    let path = file.path.clone();
    let (server_cert, server_key) = (pki.path("coordinator.crt"), pki.path("coordinator.key"));
    let coord = TestCoordinator::start_with(&db, move |c| {
        c.identities_file = Some(path);
        c.tls_cert = Some(server_cert);
        c.tls_key = Some(server_key);
        c.tls_client_ca = Some(ca);
    })
    .await;
    let url = format!("https://{}", coord.addr);
    let client = |cert: &str, key: &str| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .identity(Identity::from_pem(cert, key));
        let url = url.clone();
        async move {
            let channel = Channel::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            pb::coordinator_client::CoordinatorClient::new(channel)
        }
    };
    let mut checkout = client(&cert, &key).await;
    checkout.begin(begin_req("tls-1", None)).await.unwrap();
    let tx = checkout
        .get_transaction(pb::GetTransactionRequest {
            gid: "tls-1".into(),
            include_events: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tx.initiator, "checkout");
    // A certificate of the same CA that no identity maps is no one.
    let err = client(&stranger_cert, &stranger_key)
        .await
        .begin(begin_req("tls-2", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
}

async fn http_participants_receive_the_coordinators_token(db: TestDb) {
    let coord = TestCoordinator::start_with(&db, |c| {
        c.coordinator_token = Some(Secret::new("coordinator-secret").unwrap());
    })
    .await;
    let (p, log) = TestParticipant::start_http_on("bank-h", &db).await;
    p.register(&coord, &["debit"]).await;
    let mut c = coord.client().await;
    c.begin(begin_req("h-1", None)).await.unwrap();
    c.r#try(try_req("h-1", "bank-h", "debit")).await.unwrap();
    commit_tx(&mut c, "h-1", true).await.unwrap();
    let calls = log.all();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for call in calls {
        assert_eq!(
            call.headers.get("authorization").map(String::as_str),
            Some("Bearer coordinator-secret"),
            "{}",
            call.phase
        );
    }
}

async fn the_concurrency_limit_answers_resource_exhausted(db: TestDb) {
    let file = IdentitiesFile::new(
        "[[identity]]\nname = \"narrow\"\ntokens = [\"narrow-secret\"]\ninitiator = true\nmax_concurrent = 1\n\n\
         [[identity]]\nname = \"payment-svc\"\ntokens = [\"payment-secret\"]\nparticipants = [\"payment\"]\n",
    );
    let coord = coordinator(&db, &file).await;
    let p = TestParticipant::start_on("payment", &db).await;
    coord
        .registry_as(Some("payment-secret"))
        .await
        .register_participant(registration("payment", &p.endpoint()))
        .await
        .unwrap();
    let hold = Arc::new(tokio::sync::Notify::new());
    p.script(Ph::Try, vec![Behavior::Block(hold.clone())], Behavior::Ok);
    let mut narrow = coord.client_as(Some("narrow-secret")).await;
    narrow.begin(begin_req("n1", None)).await.unwrap();
    // One Try in flight (held by the participant)...
    let mut first = narrow.clone();
    let in_flight =
        tokio::spawn(async move { first.r#try(try_req("n1", "payment", "debit")).await });
    let until = Instant::now() + Duration::from_secs(5);
    while p.total_calls(Ph::Try) == 0 {
        assert!(Instant::now() < until, "the first Try never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...so the identity's next request is refused, while others' are not.
    let err = narrow.begin(begin_req("n2", None)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("in flight"), "{}", err.message());
    coord
        .registry_as(Some("payment-secret"))
        .await
        .list_participants(pb::ListParticipantsRequest {})
        .await
        .unwrap();
    hold.notify_one();
    in_flight.await.unwrap().unwrap();
    // Its slot is free again.
    narrow.begin(begin_req("n2", None)).await.unwrap();
}

/// The DTM-compatible API goes through the same identities: no token is
/// 401, a prepare without the initiator scope 403, another initiator's
/// submit, abort or query of the gid 403, and nothing changes; its own
/// initiator and an admin may.
async fn the_dtm_api_checks_the_same_identities_and_owners(db: TestDb) {
    let file = IdentitiesFile::new(IDENTITIES);
    let path = file.path.clone();
    let coord = TestCoordinator::start_with(&db, move |c| {
        c.identities_file = Some(path);
        c.admin_tokens = AdminTokens::parse_list("ops:admin-secret").unwrap();
        c.dtm_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let dtm = crate::dtm::Dtm::of(&coord);
    let bearer = |t: &str| format!("Bearer {t}");
    let tcc = |gid: &str| {
        serde_json::json!({"gid": gid, "trans_type": "tcc"})
            .to_string()
            .into_bytes()
    };

    let (status, body) = dtm.post_raw("prepare", tcc("dtm-auth-1")).await;
    assert_eq!(status, 401, "{body}");
    let inventory = bearer("inventory-secret");
    let (status, body) = dtm
        .post_with(
            "prepare",
            tcc("dtm-auth-1"),
            &[("authorization", &inventory)],
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains("initiator"),
        "{body}"
    );

    let checkout = bearer("checkout-secret");
    let (status, body) = dtm
        .post_with(
            "prepare",
            tcc("dtm-auth-1"),
            &[("authorization", &checkout)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let billing = bearer("billing-secret");
    for op in ["submit", "abort"] {
        let (status, body) = dtm
            .post_with(op, tcc("dtm-auth-1"), &[("authorization", &billing)])
            .await;
        assert_eq!(status, 403, "{op}: {body}");
    }
    let query = |token: String| {
        let url = format!("{}/query?gid=dtm-auth-1", dtm.base);
        async move {
            crate::dtm::client()
                .get(url)
                .header("authorization", token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(query(billing.clone()).await, 403);
    assert_eq!(query(checkout.clone()).await, 200);
    assert_eq!(query(bearer("admin-secret")).await, 200);

    // Nothing changed: still trying, begun by checkout; its owner commits.
    let tx = get_tx(
        &mut coord.client_as(Some("admin-secret")).await,
        "dtm-auth-1",
    )
    .await;
    assert_eq!(tx.status, S::Trying as i32);
    let (status, body) = dtm
        .post_with("submit", tcc("dtm-auth-1"), &[("authorization", &checkout)])
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The coordinator's own token rotates without a restart: read from
/// `coordinator_token_file`, and again when the file changes. A participant
/// that accepts only the new token refuses the calls made with the old one
/// (before the first try runs) and accepts them once the file holds the
/// new one, with the same coordinator process.
async fn the_coordinators_token_rotates_from_its_file_without_a_restart(db: TestDb) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let service = ParticipantService::builder("stock")
        .tcc_fn(
            "reserve",
            move |_ctx| {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(Vec::new()) }
            },
            |_ctx| async { Ok(Vec::new()) },
            |_ctx| async { Ok(Vec::new()) },
        )
        .build()
        .unwrap();
    let token_file = IdentitiesFile::new("old-coordinator-token\n");
    let path = token_file.path.clone();
    let coord = TestCoordinator::start_with(&db, move |c| {
        c.coordinator_token_file = Some(path);
    })
    .await;
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = ParticipantServer::new(service)
        .register_with(coord.url())
        .require_coordinator_token(["new-coordinator-token"])
        .start(listener, stop.clone().cancelled_owned())
        .await
        .unwrap();

    let mut c = coord.client().await;
    c.begin(begin_req("rot-1", None)).await.unwrap();
    let err = c
        .r#try(try_req("rot-1", "stock", "reserve"))
        .await
        .unwrap_err();
    assert!(err.message().contains("UNAUTHENTICATED"), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no action ran");

    token_file.replace("new-coordinator-token\n");
    let until = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let gid = format!("rot-2-{n}");
        c.begin(begin_req(&gid, None)).await.unwrap();
        if c.r#try(try_req(&gid, "stock", "reserve")).await.is_ok() {
            break;
        }
        assert!(Instant::now() < until, "the new token was never presented");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    stop.cancel();
    running.wait().await.unwrap();
}

on_both_stores!(
    registering_needs_the_scope_of_the_participant,
    transactions_belong_to_their_initiator_and_admins,
    a_rotated_token_works_without_a_restart,
    the_rate_limit_answers_resource_exhausted,
    without_identities_only_loopback_is_served,
    an_sdk_participant_accepts_only_the_coordinators_token,
    a_client_certificate_maps_to_its_identity,
    http_participants_receive_the_coordinators_token,
    the_concurrency_limit_answers_resource_exhausted,
    the_dtm_api_checks_the_same_identities_and_owners,
    the_coordinators_token_rotates_from_its_file_without_a_restart,
);
