//! The initiators: `concurrency` closed-loop clients, each running one
//! transaction after another until the run's total is reached, timing the
//! whole transaction and each call in it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use concord_proto::v1 as pb;
use concord_proto::v1::coordinator_client::CoordinatorClient;
use hdrhistogram::Histogram;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::participants::PARTICIPANTS;
use crate::{BenchArgs, BenchMode};

/// Microseconds, from 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One histogram per call of a transaction, in call order.
pub struct Calls(pub Vec<(&'static str, Histogram<u64>)>);

impl Calls {
    fn new(mode: BenchMode) -> Self {
        let names: &[&'static str] = match mode {
            BenchMode::Tcc => &["Begin", "Try (1st)", "Try (2nd)", "Commit"],
            BenchMode::Saga => &["SubmitSaga"],
            BenchMode::Msg => &["PrepareMessage", "SubmitMessage"],
        };
        Self(names.iter().map(|&n| (n, histogram())).collect())
    }

    /// Times `call` as the `i`-th call of the transaction.
    async fn time<T>(&mut self, i: usize, call: impl Future<Output = T>) -> T {
        let t = Instant::now();
        let out = call.await;
        let _ = self.0[i].1.record(t.elapsed().as_micros() as u64);
        out
    }

    fn add(&mut self, other: Calls) {
        for ((_, mine), (_, theirs)) in self.0.iter_mut().zip(other.0) {
            mine.add(theirs).expect("same bounds");
        }
    }
}

/// What one run measured.
pub struct Measured {
    /// Whole-transaction latency of the transactions that succeeded.
    pub transactions: Histogram<u64>,
    pub calls: Calls,
    pub failed: u64,
}

/// The initiators' connections and what they run.
pub struct Load {
    /// The connection of each client.
    clients: Vec<Channel>,
    mode: BenchMode,
    wait: bool,
    concurrency: u64,
}

impl Load {
    /// One HTTP/2 connection per 10 clients, as initiators of several
    /// service instances would have; with several coordinators, client `i`
    /// talks to coordinator `i % n` only (as a client pinned to one
    /// instance by its connection would).
    pub async fn connect(endpoints: &[String], args: &BenchArgs) -> anyhow::Result<Self> {
        let n = endpoints.len().max(1) as u64;
        let per_endpoint = args.concurrency.div_ceil(n).div_ceil(10).max(1);
        let mut channels = Vec::new();
        for i in 0..args.concurrency {
            let endpoint = &endpoints[(i % n) as usize];
            // Clients of one endpoint share its connections round-robin.
            let k = (i / n) % per_endpoint;
            let key = (i % n) * per_endpoint + k;
            if key as usize >= channels.len() {
                channels.resize(key as usize + 1, None);
            }
            if channels[key as usize].is_none() {
                channels[key as usize] = Some(
                    Endpoint::from_shared(endpoint.to_string())?
                        .tcp_nodelay(true)
                        .connect()
                        .await?,
                );
            }
        }
        let clients = (0..args.concurrency)
            .map(|i| {
                let key = (i % n) * per_endpoint + (i / n) % per_endpoint;
                channels[key as usize].clone().expect("connected above")
            })
            .collect();
        Ok(Self {
            clients,
            mode: args.mode,
            wait: args.wait,
            concurrency: args.concurrency,
        })
    }

    /// Runs `total` transactions; latencies are recorded only when `record`
    /// (the warm-up is not). The first five failures are printed.
    pub async fn run(&self, total: u64, record: bool) -> Measured {
        let (mode, wait) = (self.mode, self.wait);
        let next = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..self.concurrency {
            let mut client = CoordinatorClient::new(self.clients[i as usize].clone());
            let next = Arc::clone(&next);
            let failed = Arc::clone(&failed);
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                let mut calls = Calls::new(mode);
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let result = match mode {
                        BenchMode::Tcc => one_tcc(&mut client, &mut calls, wait).await,
                        BenchMode::Saga => one_saga(&mut client, &mut calls, wait).await,
                        BenchMode::Msg => one_msg(&mut client, &mut calls, wait).await,
                    };
                    match result {
                        Ok(()) if record => {
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                        Ok(()) => {}
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!(
                                    "bench: transaction failed: {} {}",
                                    e.code(),
                                    e.message()
                                );
                            }
                        }
                    }
                }
                (h, calls)
            }));
        }
        let mut transactions = histogram();
        let mut calls = Calls::new(mode);
        for t in tasks {
            if let Ok((h, c)) = t.await {
                transactions.add(h).expect("same bounds");
                calls.add(c);
            }
        }
        Measured {
            transactions,
            calls,
            failed: failed.load(Ordering::Relaxed),
        }
    }
}

const PAYLOAD: &[u8] = b"{\"amount\":1}";

/// One SubmitSaga with a step on each participant.
async fn one_saga(
    c: &mut CoordinatorClient<Channel>,
    calls: &mut Calls,
    wait: bool,
) -> Result<(), Status> {
    let steps = PARTICIPANTS
        .iter()
        .map(|(participant, action)| pb::SagaStep {
            participant: participant.to_string(),
            action: action.to_string(),
            compensation: format!("{action}-undo"),
            payload: PAYLOAD.to_vec(),
            ..Default::default()
        })
        .collect();
    let submit = c.submit_saga(pb::SubmitSagaRequest {
        steps,
        wait,
        ..Default::default()
    });
    calls.time(0, submit).await?;
    Ok(())
}

/// PrepareMessage with a step on each participant, then SubmitMessage
/// (the initiator's local transaction in between is not simulated).
async fn one_msg(
    c: &mut CoordinatorClient<Channel>,
    calls: &mut Calls,
    wait: bool,
) -> Result<(), Status> {
    let steps = PARTICIPANTS
        .iter()
        .map(|(participant, action)| pb::MessageStep {
            participant: participant.to_string(),
            action: action.to_string(),
            payload: PAYLOAD.to_vec(),
            call_timeout: None,
        })
        .collect();
    let prepare = c.prepare_message(pb::PrepareMessageRequest {
        steps,
        // Never asked: every message is submitted long before its timeout.
        query_endpoint: "http://127.0.0.1:9".into(),
        query_protocol: pb::Protocol::Http as i32,
        ..Default::default()
    });
    let gid = calls.time(0, prepare).await?.into_inner().gid;
    calls
        .time(1, c.submit_message(pb::SubmitMessageRequest { gid, wait }))
        .await?;
    Ok(())
}

/// Begin, a Try on each participant, Commit.
async fn one_tcc(
    c: &mut CoordinatorClient<Channel>,
    calls: &mut Calls,
    wait: bool,
) -> Result<(), Status> {
    let gid = calls
        .time(0, c.begin(pb::BeginRequest::default()))
        .await?
        .into_inner()
        .gid;
    for (i, (participant, action)) in PARTICIPANTS.into_iter().enumerate() {
        let tried = c.r#try(pb::TryRequest {
            gid: gid.clone(),
            participant: participant.into(),
            action: action.into(),
            payload: PAYLOAD.to_vec(),
            ..Default::default()
        });
        calls.time(1 + i, tried).await?;
    }
    calls
        .time(3, c.commit(pb::CommitRequest { gid, wait }))
        .await?;
    Ok(())
}
