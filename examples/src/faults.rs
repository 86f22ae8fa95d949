//! Fault injection around a participant service: the failures a network and
//! a crashing participant produce, at random, so that the coordinator's
//! retries and the SDK's barrier are exercised together.
//!
//! [`FaultyParticipant`] implements the generated `Participant` gRPC trait
//! around any other implementation (normally a
//! [`ParticipantService`](concord_sdk::ParticipantService)); each call is
//! either passed through or suffers one [`Fault`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use concord_sdk::Op;
use concord_sdk::proto::participant::v1::participant_server::Participant;
use concord_sdk::proto::participant::v1::{BranchRequest, BranchResponse};
use rand::Rng;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

/// One injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The request never reaches the service; the caller gets UNAVAILABLE.
    Unavailable,
    /// The service runs the call, but the reply is lost: the caller gets
    /// UNAVAILABLE although the work happened.
    LostReply,
    /// The service runs the call, and the reply is held back for
    /// [`Faults::late_by`], past the caller's deadline.
    LateReply,
    /// The request is delivered twice at the same time.
    Duplicate,
    /// The request is delivered once more, later (within
    /// [`Faults::redeliver_within`]), after the caller got its reply; a
    /// late Try may so arrive after its Cancel.
    Redeliver,
}

impl Fault {
    /// Every kind, in a fixed order.
    pub const ALL: [Fault; 5] = [
        Fault::Unavailable,
        Fault::LostReply,
        Fault::LateReply,
        Fault::Duplicate,
        Fault::Redeliver,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// How often each [`Fault`] happens: probabilities per call, summing to at
/// most 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Probability of each fault, indexed like [`Fault::ALL`].
    pub rates: [f64; 5],
    /// How long a [`Fault::LateReply`] is held back; make it longer than
    /// the coordinator's call timeout.
    pub late_by: Duration,
    /// Upper bound of the delay of a [`Fault::Redeliver`].
    pub redeliver_within: Duration,
}

impl Faults {
    /// No fault at all.
    pub fn none() -> Self {
        Self {
            rates: [0.0; 5],
            late_by: Duration::ZERO,
            redeliver_within: Duration::ZERO,
        }
    }

    /// A fault on a fraction `rate` of the calls, spread evenly over the
    /// kinds; late replies arrive after `late_by`.
    pub fn mixed(rate: f64, late_by: Duration) -> Self {
        let each = rate.clamp(0.0, 1.0) / Fault::ALL.len() as f64;
        Self {
            rates: [each; 5],
            late_by,
            redeliver_within: late_by * 2,
        }
    }

    fn pick(&self) -> Option<Fault> {
        let mut roll: f64 = rand::rng().random();
        for fault in Fault::ALL {
            roll -= self.rates[fault.index()];
            if roll < 0.0 {
                return Some(fault);
            }
        }
        None
    }
}

/// How many calls a [`FaultyParticipant`] saw and how many of each fault it
/// injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Calls received from the coordinator.
    pub calls: u64,
    /// Injected faults, indexed like [`Fault::ALL`].
    pub injected: [u64; 5],
}

impl FaultReport {
    /// Adds another report to this one.
    pub fn add(&mut self, other: FaultReport) {
        self.calls += other.calls;
        for (a, b) in self.injected.iter_mut().zip(other.injected) {
            *a += b;
        }
    }

    /// The count of one fault.
    pub fn of(&self, fault: Fault) -> u64 {
        self.injected[fault.index()]
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} calls: {} unavailable, {} lost replies, {} late replies, {} duplicated, {} redelivered later",
            self.calls,
            self.of(Fault::Unavailable),
            self.of(Fault::LostReply),
            self.of(Fault::LateReply),
            self.of(Fault::Duplicate),
            self.of(Fault::Redeliver),
        )
    }
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    injected: [AtomicU64; 5],
}

/// A participant that passes calls to `inner`, except when it injects a
/// [`Fault`].
///
/// Deliveries to `inner` run as tasks of their own, so work that has started
/// completes even when the coordinator gives up on the call (as it would in
/// a real service whose database transaction is already committing).
pub struct FaultyParticipant<P> {
    inner: Arc<P>,
    faults: Arc<Faults>,
    counters: Arc<Counters>,
    tasks: TaskTracker,
}

impl<P> Clone for FaultyParticipant<P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            faults: self.faults.clone(),
            counters: self.counters.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

impl<P> fmt::Debug for FaultyParticipant<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyParticipant")
            .field("faults", &self.faults)
            .field("report", &self.report())
            .finish()
    }
}

impl<P> FaultyParticipant<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, faults: Faults) -> Self {
        Self {
            inner: Arc::new(inner),
            faults: Arc::new(faults),
            counters: Arc::default(),
            tasks: TaskTracker::new(),
        }
    }

    /// What was injected so far.
    pub fn report(&self) -> FaultReport {
        let mut report = FaultReport {
            calls: self.counters.calls.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (n, c) in report.injected.iter_mut().zip(&self.counters.injected) {
            *n = c.load(Ordering::Relaxed);
        }
        report
    }

    /// Waits until every delivery, including the delayed ones, is over.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}

impl<P: Participant> FaultyParticipant<P> {
    async fn call(&self, op: Op, request: Request<BranchRequest>) -> CallResult {
        let req = request.into_inner();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let Some(fault) = self.faults.pick() else {
            return self.run(op, req).await;
        };
        self.counters.injected[fault.index()].fetch_add(1, Ordering::Relaxed);
        tracing::debug!(gid = %req.gid, branch_id = %req.branch_id, op = op.as_str(), ?fault, "injecting fault");
        match fault {
            Fault::Unavailable => Err(Status::unavailable("injected fault: request lost")),
            Fault::LostReply => {
                let _ = self.run(op, req).await;
                Err(Status::unavailable("injected fault: reply lost"))
            }
            Fault::LateReply => {
                let reply = self.run(op, req).await;
                tokio::time::sleep(self.faults.late_by).await;
                reply
            }
            Fault::Duplicate => {
                let (first, _) = tokio::join!(self.run(op, req.clone()), self.run(op, req));
                first
            }
            Fault::Redeliver => {
                let reply = self.run(op, req.clone()).await;
                let max = self.faults.redeliver_within.as_millis().max(1) as u64;
                let delay = Duration::from_millis(rand::rng().random_range(0..max));
                let inner = self.inner.clone();
                self.tasks.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = deliver(&*inner, op, req).await;
                });
                reply
            }
        }
    }

    /// Delivers the call to `inner` in a task that outlives the gRPC call.
    async fn run(&self, op: Op, req: BranchRequest) -> CallResult {
        let inner = self.inner.clone();
        self.tasks
            .spawn(async move { deliver(&*inner, op, req).await })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("participant task failed: {e}"))))
    }
}

type CallResult = Result<Response<BranchResponse>, Status>;

async fn deliver<P: Participant>(inner: &P, op: Op, req: BranchRequest) -> CallResult {
    let request = Request::new(req);
    match op {
        Op::Try => inner.r#try(request).await,
        Op::Confirm => inner.confirm(request).await,
        Op::Cancel => inner.cancel(request).await,
        Op::Execute => inner.execute(request).await,
        Op::Compensate => inner.compensate(request).await,
    }
}

#[tonic::async_trait]
impl<P: Participant> Participant for FaultyParticipant<P> {
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

    #[test]
    fn no_faults_never_picks_one() {
        let f = Faults::none();
        assert!((0..1000).all(|_| f.pick().is_none()));
    }

    #[test]
    fn certain_fault_is_always_picked() {
        let mut f = Faults::none();
        f.rates[Fault::Duplicate.index()] = 1.0;
        assert!((0..1000).all(|_| f.pick() == Some(Fault::Duplicate)));
    }

    #[test]
    fn mixed_rates_sum_to_the_rate() {
        let f = Faults::mixed(0.5, Duration::from_millis(10));
        assert!((f.rates.iter().sum::<f64>() - 0.5).abs() < 1e-9);
        let hits = (0..20_000).filter(|_| f.pick().is_some()).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }
}
