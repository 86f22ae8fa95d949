//! The participant client's unit tests: classification, which failures trip
//! a breaker, endpoint choice, and the "participant is back" signal.

use super::*;

#[test]
fn classification_follows_the_outcome_contract() {
    let ok = classify(Ok(BranchResponse {
        payload: b"x".to_vec(),
    }));
    assert_eq!(ok, (Outcome::Succeeded, b"x".to_vec()));
    let (rejected, _) = classify(Err(tonic::Status::aborted("no funds")));
    assert_eq!(
        rejected,
        Outcome::Rejected {
            message: "no funds".into()
        }
    );
    for status in [
        tonic::Status::unavailable("down"),
        tonic::Status::deadline_exceeded("slow"),
        tonic::Status::internal("bug"),
        tonic::Status::not_found("no such action"),
    ] {
        let code = code_name(status.code());
        let (outcome, _) = classify(Err(status));
        assert!(matches!(outcome, Outcome::Unknown { code: c, .. } if c == code));
    }
}

#[test]
fn only_transport_failures_trip_the_breaker() {
    let mut transport = tonic::Status::unavailable("tcp connect error");
    transport.set_source(std::sync::Arc::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )));
    assert!(endpoint_failed(&Err(transport)));
    assert!(endpoint_failed(&Err(tonic::Status::deadline_exceeded(
        "slow"
    ))));
    // Answers the participant sent itself prove it is up.
    assert!(!endpoint_failed(&Err(tonic::Status::unavailable(
        "db down"
    ))));
    assert!(!endpoint_failed(&Err(tonic::Status::internal("bug"))));
    assert!(!endpoint_failed(&Err(tonic::Status::aborted("no"))));
    assert!(!endpoint_failed(&Ok(BranchResponse::default())));
}

#[tokio::test]
async fn an_unreachable_endpoint_opens_its_breaker() {
    let clients = ParticipantClients::new(2, Duration::from_secs(60), 1 << 20);
    // Port 9 on loopback: nothing listens, the connection is refused.
    let url = Endpoint::grpc(EndpointUrl::parse("http://127.0.0.1:9").unwrap());
    let name = ParticipantName::parse("p").unwrap();
    let call = || {
        clients.call(
            &name,
            std::slice::from_ref(&url),
            Phase::Confirm,
            BranchRequest::default(),
            Duration::from_secs(2),
        )
    };
    for _ in 0..2 {
        let reply = call().await;
        assert!(
            matches!(reply.outcome, Outcome::Unknown { ref code, .. } if code == "UNAVAILABLE"),
            "{:?}",
            reply.outcome
        );
    }
    assert_eq!(clients.health()[0].breaker, BreakerState::Open);
    let reply = call().await;
    assert!(
        reply.outcome.message().contains("circuit open"),
        "{:?}",
        reply.outcome
    );
}

#[tokio::test]
async fn an_answer_after_failures_says_the_participant_is_back() {
    let clients = ParticipantClients::new(5, Duration::from_secs(60), 1 << 20);
    let p = ParticipantName::parse("p").unwrap();
    let down = Outcome::Unknown {
        code: "UNAVAILABLE".into(),
        message: String::new(),
    };
    async fn quiet(c: &ParticipantClients) -> bool {
        tokio::time::timeout(Duration::from_millis(20), c.recovered().next())
            .await
            .is_err()
    }
    clients.track_health(&p, &Outcome::Succeeded, false);
    assert!(quiet(&clients).await, "healthy all along: nothing is back");
    clients.track_health(&p, &down, false);
    clients.track_health(&p, &down, false);
    assert!(quiet(&clients).await, "still down");
    // A business refusal is an answer too.
    clients.track_health(
        &p,
        &Outcome::Rejected {
            message: "no".into(),
        },
        false,
    );
    assert_eq!(clients.recovered().next().await, vec![p.clone()]);
    clients.track_health(&p, &Outcome::Succeeded, false);
    assert!(quiet(&clients).await, "said once per comeback");
    // A probe that closed a breaker says it too.
    clients.track_health(&p, &Outcome::Succeeded, true);
    assert_eq!(clients.recovered().next().await, vec![p.clone()]);
    // So does a registration, which also closes the endpoint's breaker.
    let url = EndpointUrl::parse("http://127.0.0.1:9").unwrap();
    let endpoint = Endpoint::grpc(url.clone());
    let pick = |clients: &ParticipantClients| clients.pick(std::slice::from_ref(&endpoint));
    clients.report(&url, &down, true);
    assert_eq!(pick(&clients), Some(endpoint.clone()));
    for _ in 0..5 {
        clients.report(&url, &down, true);
    }
    assert_eq!(pick(&clients), None, "open");
    clients.registered(&p, &url);
    assert_eq!(clients.recovered().next().await, vec![p]);
    assert_eq!(pick(&clients), Some(endpoint.clone()));
}

#[tokio::test]
async fn a_dropped_probe_does_not_keep_the_breaker_half_open() {
    let clients = ParticipantClients::new(1, Duration::from_millis(10), 1 << 20);
    let p = ParticipantName::parse("p").unwrap();
    // Nothing listens on port 9: the first call opens the breaker.
    let url = Endpoint::grpc(EndpointUrl::parse("http://127.0.0.1:9").unwrap());
    let call = || {
        clients.call(
            &p,
            std::slice::from_ref(&url),
            Phase::Confirm,
            BranchRequest::default(),
            Duration::from_secs(2),
        )
    };
    call().await;
    assert_eq!(clients.health()[0].breaker, BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(15)).await;
    // The probe's future is dropped before it can report (its request
    // was cancelled): the next call may probe again.
    drop(
        std::pin::pin!(call())
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop())),
    );
    assert!(
        clients.pick(std::slice::from_ref(&url)).is_some(),
        "a new probe is allowed"
    );
}

#[test]
fn load_is_spread_and_open_breakers_are_skipped() {
    let clients = ParticipantClients::new(1, Duration::from_secs(60), 1 << 20);
    let a = Endpoint::grpc(EndpointUrl::parse("http://127.0.0.1:1").unwrap());
    let b = Endpoint::grpc(EndpointUrl::parse("http://127.0.0.1:2").unwrap());
    let both = [a.clone(), b.clone()];
    // The start is random: over 200 picks each endpoint gets a share
    // (failing this by chance has a probability below 1e-20).
    let picks: Vec<_> = (0..200).map(|_| clients.pick(&both).unwrap()).collect();
    let to_a = picks.iter().filter(|p| **p == a).count();
    assert!((40..=160).contains(&to_a), "{to_a} of 200 picks went to a");
    clients.report(
        &a.url,
        &Outcome::Unknown {
            code: "UNAVAILABLE".into(),
            message: String::new(),
        },
        true,
    );
    for _ in 0..4 {
        assert_eq!(clients.pick(&both).unwrap(), b);
    }
    clients.report(
        &b.url,
        &Outcome::Unknown {
            code: "UNAVAILABLE".into(),
            message: String::new(),
        },
        true,
    );
    assert_eq!(clients.pick(&both), None);
}
