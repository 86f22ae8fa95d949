//! The saga builder: describes a whole saga (steps, their compensations and
//! the order between them) and submits it to the coordinator in one call,
//! which then runs it durably on its own.

use std::time::Duration;

use concord_proto::v1::{SagaStep, SubmitSagaRequest, TransactionStatus};

use super::{Coordinator, Error, Result, TRACEPARENT, proto_duration, with_trace};

impl Coordinator {
    /// Starts describing a saga. With `gid`, a retried submission (after
    /// [`Error::Unavailable`], say) lands on the same saga instead of
    /// starting a second one; with `None` the coordinator generates an id.
    ///
    /// Steps are numbered from 0 in the order they are added; see
    /// [`SagaBuilder`].
    ///
    /// ```no_run
    /// use concord_sdk::Coordinator;
    ///
    /// # async fn run() -> Result<(), concord_sdk::initiator::Error> {
    /// let coordinator = Coordinator::connect("http://127.0.0.1:50051").await?;
    /// let outcome = coordinator
    ///     .saga(Some("order-42"))
    ///     .step("inventory", "reserve", "release", br#"{"sku":"tea","qty":2}"#.to_vec())
    ///     .step("payment", "charge", "refund", br#"{"customer":7,"amount":30}"#.to_vec())
    ///     .submit(true)
    ///     .await?;
    /// println!("{} is {:?}", outcome.gid, outcome.status);
    /// # Ok(())
    /// # }
    /// ```
    pub fn saga(&self, gid: Option<&str>) -> SagaBuilder {
        SagaBuilder {
            client: self.client.clone(),
            request: SubmitSagaRequest {
                gid: gid.unwrap_or_default().to_owned(),
                ..Default::default()
            },
            wait_timeout: None,
            misuse: None,
        }
    }
}

/// A saga being described; see [`Coordinator::saga`].
///
/// Each [`step`](Self::step) names a participant, the forward action, the
/// compensating action (of the same participant) and the payload both get.
/// Methods that qualify a step ([`after`](Self::after),
/// [`compensate_rejected`](Self::compensate_rejected),
/// [`call_timeout`](Self::call_timeout)) apply to the step added last.
///
/// When no step declares dependencies, steps run one after another in the
/// order given. Once any step uses [`after`](Self::after), the order is
/// exactly the declared dependencies and independent steps run concurrently
/// (at most [`concurrency`](Self::concurrency) at once).
///
/// ```no_run
/// use std::time::Duration;
/// use concord_sdk::Coordinator;
/// use concord_sdk::proto::v1::TransactionStatus;
///
/// # async fn run(coordinator: Coordinator) -> Result<(), concord_sdk::initiator::Error> {
/// // 0 and 1 run at once; 2 starts once both succeeded.
/// let outcome = coordinator
///     .saga(None)
///     .step("inventory", "reserve", "release", br#"{"sku":"tea","qty":1}"#.to_vec())
///     .step("shipping", "book", "unbook", br#"{"order":42}"#.to_vec())
///     .after(&[])
///     .step("payment", "charge", "refund", br#"{"amount":30}"#.to_vec())
///     .after(&[0, 1])
///     .call_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(60))
///     .concurrency(2)
///     .submit(true)
///     .await?;
/// if outcome.status == TransactionStatus::Compensated {
///     eprintln!("order failed: {}", outcome.reason.unwrap_or_default());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a saga does nothing until submitted"]
pub struct SagaBuilder {
    client: super::Client,
    request: SubmitSagaRequest,
    wait_timeout: Option<Duration>,
    /// A qualifier used before any step, reported by `submit` rather than a
    /// panic in the middle of a builder chain.
    misuse: Option<String>,
}

impl SagaBuilder {
    /// Adds a step: `participant`'s `action` with `payload`, undone by
    /// `compensation` (an action of the same participant, called with the
    /// same payload) if the saga has to roll back. Its index is the number
    /// of steps added before it.
    ///
    /// A step whose action is rejected is compensated too, by default (see
    /// [`compensate_rejected`](Self::compensate_rejected)): the
    /// compensation must accept being called for an action that refused,
    /// which [`Barrier::run`](crate::Barrier::run) turns into a no-op when
    /// the refusal changed nothing.
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator
    ///     .saga(None)
    ///     .step("inventory", "reserve", "release", b"tea".to_vec()) // step 0
    ///     .step("payment", "charge", "refund", b"30".to_vec()); // step 1
    /// assert_eq!(saga.len(), 2);
    /// # }
    /// ```
    pub fn step(
        mut self,
        participant: &str,
        action: &str,
        compensation: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        self.request.steps.push(SagaStep {
            participant: participant.to_owned(),
            action: action.to_owned(),
            compensation: compensation.to_owned(),
            payload: payload.into(),
            depends_on: Vec::new(),
            compensate_rejected: None,
            call_timeout: None,
            policy: None,
        });
        self
    }

    /// [`step`](Self::step) with `payload` sent as JSON. A payload that
    /// does not serialise makes [`submit`](Self::submit) fail with
    /// [`Error::InvalidArgument`] without calling the coordinator.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Charge { customer: i64, amount: i64 }
    ///
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator
    ///     .saga(None)
    ///     .step_json("payment", "charge", "refund", &Charge { customer: 7, amount: 30 });
    /// assert_eq!(saga.len(), 1);
    /// # }
    /// ```
    pub fn step_json<P: serde::Serialize + ?Sized>(
        mut self,
        participant: &str,
        action: &str,
        compensation: &str,
        payload: &P,
    ) -> Self {
        let payload = match serde_json::to_vec(payload) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.misuse.get_or_insert_with(|| {
                    format!(
                        "step {}: payload does not serialise as JSON: {e}",
                        self.request.steps.len()
                    )
                });
                Vec::new()
            }
        };
        self.step(participant, action, compensation, payload)
    }

    /// The last step starts only once the steps at `indices` (earlier
    /// steps only) succeeded.
    ///
    /// As soon as any step declares a non-empty list, every step runs by
    /// its dependencies alone, so steps without any start at once; `after(&[])`
    /// documents that intent but on its own changes nothing (a saga where no
    /// step declares any runs in order).
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator
    ///     .saga(None)
    ///     .step("a", "do", "undo", Vec::new())
    ///     .after(&[])
    ///     .step("b", "do", "undo", Vec::new())
    ///     .after(&[])
    ///     .step("c", "do", "undo", Vec::new())
    ///     .after(&[0, 1]);
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn after(mut self, indices: &[u32]) -> Self {
        match self.request.steps.last_mut() {
            Some(step) => step.depends_on = indices.to_vec(),
            None => self.misuse = Some("after() called before any step".into()),
        }
        self
    }

    /// Whether the last step is compensated even when its action was
    /// rejected (default `true`: a rejected action may have partly run).
    /// Set `false` for actions that change nothing when they reject.
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator
    ///     .saga(None)
    ///     .step("payment", "charge", "refund", b"30".to_vec())
    ///     .compensate_rejected(false);
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn compensate_rejected(mut self, compensate: bool) -> Self {
        match self.request.steps.last_mut() {
            Some(step) => step.compensate_rejected = Some(compensate),
            None => self.misuse = Some("compensate_rejected() called before any step".into()),
        }
        self
    }

    /// Deadline of each participant call of the last step (the
    /// coordinator's default when not set).
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// use std::time::Duration;
    /// let saga = coordinator
    ///     .saga(None)
    ///     .step("payment", "charge", "refund", b"30".to_vec())
    ///     .call_timeout(Duration::from_millis(500));
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        match self.request.steps.last_mut() {
            Some(step) => step.call_timeout = Some(proto_duration(timeout)),
            None => self.misuse = Some("call_timeout() called before any step".into()),
        }
        self
    }

    /// The call policy of the last step's action and compensation (unset
    /// parts follow the action's registered policy, then the
    /// coordinator's).
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator
    ///     .saga(None)
    ///     .step("payment", "charge", "refund", b"30".to_vec())
    ///     .policy(concord_sdk::CallPolicy::new().max_attempts(3));
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn policy(mut self, policy: crate::CallPolicy) -> Self {
        match self.request.steps.last_mut() {
            Some(step) => step.policy = Some(policy.to_proto()),
            None => self.misuse = Some("policy() called before any step".into()),
        }
        self
    }

    /// Past this long, a saga still running stops and compensates. By
    /// default a saga has no deadline.
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// use std::time::Duration;
    /// let saga = coordinator.saga(None).timeout(Duration::from_secs(30));
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.timeout = Some(proto_duration(timeout));
        self
    }

    /// Most steps running at once (the coordinator's default, 8, when not
    /// set). Only matters for steps that do not depend on each other.
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator.saga(None).concurrency(2);
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.request.concurrency = concurrency;
        self
    }

    /// Adds one metadata entry, forwarded to every participant call (for
    /// example a W3C `traceparent`, which is also sent as a gRPC header).
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// let saga = coordinator
    ///     .saga(None)
    ///     .metadata("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.metadata.insert(key.into(), value.into());
        self
    }

    /// How long a waiting [`submit`](Self::submit) waits for the saga to
    /// finish before returning [`Error::DeadlineExceeded`] (the saga goes on
    /// in the background). Without it, the coordinator's maximum wait
    /// applies.
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// use std::time::Duration;
    /// let saga = coordinator.saga(None).wait_timeout(Duration::from_secs(5));
    /// # let _ = saga;
    /// # }
    /// ```
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// How many steps were added.
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// assert_eq!(coordinator.saga(None).len(), 0);
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.request.steps.len()
    }

    /// Whether no step was added (the coordinator refuses an empty saga).
    ///
    /// ```
    /// # async fn run(coordinator: concord_sdk::Coordinator) {
    /// assert!(coordinator.saga(None).is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.request.steps.is_empty()
    }

    /// Submits the saga. The coordinator stores it durably before replying,
    /// then runs it by itself (surviving its own restarts).
    ///
    /// Without `wait`, returns once the saga is stored (status
    /// [`Running`](TransactionStatus::Running)). With `wait`, returns once it
    /// [`Succeeded`](TransactionStatus::Succeeded) or is
    /// [`Compensated`](TransactionStatus::Compensated), or
    /// [`Error::DeadlineExceeded`] while it goes on in the background.
    /// Submitting the same gid again returns the existing saga.
    ///
    /// ```no_run
    /// # async fn run(coordinator: concord_sdk::Coordinator) -> Result<(), concord_sdk::initiator::Error> {
    /// let outcome = coordinator
    ///     .saga(Some("order-42"))
    ///     .step("payment", "charge", "refund", b"30".to_vec())
    ///     .submit(false)
    ///     .await?;
    /// assert_eq!(outcome.gid, "order-42");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn submit(mut self, wait: bool) -> Result<SagaOutcome> {
        if let Some(message) = self.misuse {
            return Err(Error::InvalidArgument { message });
        }
        self.request.wait = wait;
        let traceparent = self.request.metadata.get(TRACEPARENT).cloned();
        let mut request = with_trace(self.request, traceparent.as_deref());
        if let (true, Some(timeout)) = (wait, self.wait_timeout) {
            request.set_timeout(timeout);
        }
        let reply = self.client.submit_saga(request).await?.into_inner();
        let status = reply.status();
        tracing::debug!(gid = %reply.gid, ?status, "saga submitted");
        Ok(SagaOutcome {
            gid: reply.gid,
            status,
            reason: (!reply.reason.is_empty()).then_some(reply.reason),
        })
    }
}

/// What [`SagaBuilder::submit`] returned.
///
/// ```
/// use concord_sdk::SagaOutcome;
/// use concord_sdk::proto::v1::TransactionStatus;
///
/// let outcome = SagaOutcome {
///     gid: "order-42".into(),
///     status: TransactionStatus::Compensated,
///     reason: Some("payment/charge rejected: insufficient funds".into()),
/// };
/// assert!(!outcome.succeeded());
/// assert!(outcome.is_finished());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaOutcome {
    /// The saga's id, as given or as generated by the coordinator.
    pub gid: String,
    /// `Running` or `Compensating` when not waiting (or still going on),
    /// `Succeeded` or `Compensated` once finished.
    pub status: TransactionStatus,
    /// Why the saga compensated, if it did.
    pub reason: Option<String>,
}

impl SagaOutcome {
    /// Whether every step succeeded.
    ///
    /// ```
    /// # use concord_sdk::SagaOutcome;
    /// # use concord_sdk::proto::v1::TransactionStatus;
    /// let o = SagaOutcome { gid: "g".into(), status: TransactionStatus::Succeeded, reason: None };
    /// assert!(o.succeeded());
    /// ```
    pub fn succeeded(&self) -> bool {
        self.status == TransactionStatus::Succeeded
    }

    /// Whether the saga reached a final status (succeeded or compensated).
    ///
    /// ```
    /// # use concord_sdk::SagaOutcome;
    /// # use concord_sdk::proto::v1::TransactionStatus;
    /// let o = SagaOutcome { gid: "g".into(), status: TransactionStatus::Running, reason: None };
    /// assert!(!o.is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status,
            TransactionStatus::Succeeded | TransactionStatus::Compensated
        )
    }
}
