//! The participant side of the chaos run: a wrapper around a participant
//! service that records when every call of a branch phase starts and ends,
//! and counts an overlap whenever a call of (gid, branch, phase) arrives
//! while another call of the same one is still in flight.
//!
//! A call is in flight from its arrival until its work is over or its
//! deadline (the `grpc-timeout` the coordinator sent) has passed, whichever
//! comes first: the work runs in a task of its own that outlives the gRPC
//! call (a real participant's database transaction does not stop because
//! the caller went away), and is dropped at the deadline, as a participant
//! that honours deadlines does. A coordinator that keeps its promise never
//! sends a second call of a branch phase before the first one's deadline,
//! so any overlap seen here is a broken promise.
//!
//! It also injects the slow call of issue 11: a fraction of calls wait
//! longer than the coordinator's lease (but less than the call deadline)
//! before doing their work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_sdk::Op;
use concord_sdk::proto::participant::v1::participant_server::Participant;
use concord_sdk::proto::participant::v1::{BranchRequest, BranchResponse};
use rand::Rng;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

type CallResult = Result<Response<BranchResponse>, Status>;
type Key = (String, String, Op);

/// Slow calls to inject.
#[derive(Clone, Copy, Debug)]
pub struct SlowCalls {
    /// Fraction of calls that are slow.
    pub rate: f64,
    /// How long a slow call waits before its work.
    pub delay: Duration,
}

/// Two calls of one branch phase in flight at once.
#[derive(Clone, Debug)]
pub struct Overlap {
    pub gid: String,
    pub branch_id: String,
    pub phase: Op,
    /// When the call still in flight arrived, since the run began.
    pub first: Duration,
    /// When the overlapping one arrived.
    pub second: Duration,
}

/// What the recorder saw.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Calls per phase, indexed like [`PHASES`].
    pub calls: [u64; 5],
    /// Slow calls injected.
    pub slow: u64,
    /// Calls whose work was dropped at their deadline.
    pub cut_at_deadline: u64,
    /// Every overlap, in order of detection.
    pub overlaps: Vec<Overlap>,
    /// Calls in flight now.
    pub in_flight: usize,
}

/// The phases in the order of [`Tally::calls`].
pub const PHASES: [Op; 5] = [
    Op::Try,
    Op::Confirm,
    Op::Cancel,
    Op::Execute,
    Op::Compensate,
];

fn phase_index(op: Op) -> usize {
    PHASES.iter().position(|p| *p == op).unwrap_or(0)
}

#[derive(Default)]
struct Book {
    tally: Tally,
    /// Arrival times and deadlines of the calls in flight, per branch phase.
    in_flight: HashMap<Key, Vec<(u64, Instant, Instant)>>,
    next_id: u64,
}

/// The shared record of every wrapped participant.
#[derive(Clone)]
pub struct Calls {
    book: Arc<Mutex<Book>>,
    began: Instant,
}

impl Calls {
    pub fn new(began: Instant) -> Self {
        Self {
            book: Arc::default(),
            began,
        }
    }

    pub fn tally(&self) -> Tally {
        let book = self.book.lock().unwrap();
        let mut tally = book.tally.clone();
        tally.in_flight = book.in_flight.values().map(Vec::len).sum();
        tally
    }

    /// The latest deadline of the calls of `gid` in flight now, if any.
    pub fn in_flight_until(&self, gid: &str) -> Option<Instant> {
        let book = self.book.lock().unwrap();
        book.in_flight
            .iter()
            .filter(|(k, _)| k.0 == gid)
            .flat_map(|(_, calls)| calls.iter().map(|(_, _, until)| *until))
            .max()
    }

    /// The calls of `gid` in flight now, for a report: branch, phase, how
    /// long ago each arrived and how long until its deadline.
    pub fn in_flight_detail(&self, gid: &str) -> String {
        let now = Instant::now();
        let book = self.book.lock().unwrap();
        let calls: Vec<String> = book
            .in_flight
            .iter()
            .filter(|(k, _)| k.0 == gid)
            .flat_map(|(k, calls)| {
                calls.iter().map(move |(_, arrived, until)| {
                    format!(
                        "{} {:?} arrived {:.2}s before, deadline {:.2}s after",
                        k.1,
                        k.2,
                        now.duration_since(*arrived).as_secs_f64(),
                        until.saturating_duration_since(now).as_secs_f64()
                    )
                })
            })
            .collect();
        calls.join(" and ")
    }

    /// Records an arrival of a call with `deadline`; the id ends it.
    fn arrive(&self, key: &Key, deadline: Duration) -> u64 {
        let now = Instant::now();
        let mut book = self.book.lock().unwrap();
        let id = book.next_id;
        book.next_id += 1;
        book.tally.calls[phase_index(key.2)] += 1;
        let earlier: Vec<Instant> = book
            .in_flight
            .get(key)
            .map(|calls| calls.iter().map(|(_, at, _)| *at).collect())
            .unwrap_or_default();
        for at in earlier {
            let overlap = Overlap {
                gid: key.0.clone(),
                branch_id: key.1.clone(),
                phase: key.2,
                first: at - self.began,
                second: now - self.began,
            };
            book.tally.overlaps.push(overlap);
        }
        book.in_flight
            .entry(key.clone())
            .or_default()
            .push((id, now, now + deadline));
        id
    }

    fn leave(&self, key: &Key, id: u64, cut: bool) {
        let mut book = self.book.lock().unwrap();
        if cut {
            book.tally.cut_at_deadline += 1;
        }
        if let Some(calls) = book.in_flight.get_mut(key) {
            calls.retain(|(i, _, _)| *i != id);
            if calls.is_empty() {
                book.in_flight.remove(key);
            }
        }
    }

    fn count_slow(&self) {
        self.book.lock().unwrap().tally.slow += 1;
    }
}

/// A participant wrapped for recording.
pub struct Recorder<P> {
    inner: Arc<P>,
    calls: Calls,
    slow: SlowCalls,
    /// The deadline assumed when a call carries none.
    default_deadline: Duration,
}

impl<P> Recorder<P> {
    pub fn new(inner: P, calls: Calls, slow: SlowCalls, default_deadline: Duration) -> Self {
        Self {
            inner: Arc::new(inner),
            calls,
            slow,
            default_deadline,
        }
    }
}

impl<P: Participant> Recorder<P> {
    async fn call(&self, op: Op, request: Request<BranchRequest>) -> CallResult {
        let deadline = grpc_timeout(request.metadata()).unwrap_or(self.default_deadline);
        let key = (
            request.get_ref().gid.clone(),
            request.get_ref().branch_id.clone(),
            op,
        );
        let id = self.calls.arrive(&key, deadline);
        let slow = rand::rng().random_bool(self.slow.rate);
        if slow {
            self.calls.count_slow();
        }
        let (inner, calls, delay) = (self.inner.clone(), self.calls.clone(), self.slow.delay);
        // The work outlives the gRPC call; only the deadline stops it.
        let work = tokio::spawn(async move {
            let work = async {
                if slow {
                    tokio::time::sleep(delay).await;
                }
                deliver(&*inner, op, request).await
            };
            let result = tokio::time::timeout(deadline, work).await;
            calls.leave(&key, id, result.is_err());
            result.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(
                    "the participant dropped the call at its deadline",
                ))
            })
        });
        work.await
            .unwrap_or_else(|e| Err(Status::internal(format!("participant task failed: {e}"))))
    }
}

async fn deliver<P: Participant>(inner: &P, op: Op, request: Request<BranchRequest>) -> CallResult {
    match op {
        Op::Try => inner.r#try(request).await,
        Op::Confirm => inner.confirm(request).await,
        Op::Cancel => inner.cancel(request).await,
        Op::Execute => inner.execute(request).await,
        Op::Compensate => inner.compensate(request).await,
    }
}

/// The `grpc-timeout` header: digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl<P: Participant> Participant for Recorder<P> {
    async fn r#try(&self, request: Request<BranchRequest>) -> CallResult {
        self.call(Op::Try, request).await
    }
    async fn confirm(&self, request: Request<BranchRequest>) -> CallResult {
        self.call(Op::Confirm, request).await
    }
    async fn cancel(&self, request: Request<BranchRequest>) -> CallResult {
        self.call(Op::Cancel, request).await
    }
    async fn execute(&self, request: Request<BranchRequest>) -> CallResult {
        self.call(Op::Execute, request).await
    }
    async fn compensate(&self, request: Request<BranchRequest>) -> CallResult {
        self.call(Op::Compensate, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", v.parse().unwrap());
        m
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout(&meta("5000m")), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(&meta("3S")), Some(Duration::from_secs(3)));
        assert_eq!(grpc_timeout(&meta("7x")), None);
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }

    #[tokio::test]
    async fn a_second_call_while_the_first_is_in_flight_is_an_overlap() {
        let calls = Calls::new(Instant::now());
        let key = ("g".to_string(), "b".to_string(), Op::Confirm);
        let first = calls.arrive(&key, Duration::from_secs(5));
        let second = calls.arrive(&key, Duration::from_secs(5));
        calls.leave(&key, first, false);
        calls.leave(&key, second, true);
        // After both ended, a third call overlaps nothing.
        let third = calls.arrive(&key, Duration::from_secs(5));
        calls.leave(&key, third, false);
        // Another phase of the same branch is another key.
        let cancel = ("g".to_string(), "b".to_string(), Op::Cancel);
        let c = calls.arrive(&cancel, Duration::from_secs(5));
        calls.leave(&cancel, c, false);
        let t = calls.tally();
        assert_eq!(t.overlaps.len(), 1);
        assert_eq!(t.calls[phase_index(Op::Confirm)], 3);
        assert_eq!(t.cut_at_deadline, 1);
        assert_eq!(t.in_flight, 0);
    }
}
