//! [`ParticipantService`]: routes the coordinator's calls to the actions
//! registered by name, and maps their outcomes to gRPC statuses.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use concord_proto::participant::v1::participant_server::Participant;
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::action::{SagaFn, TccFn};
use super::{
    ActionError, ActionResult, BranchContext, IntoReply, Op, SagaAction, TccAction, is_valid_name,
};

/// Why [`ParticipantServiceBuilder::build`] refused a configuration.
///
/// ```
/// use concord_sdk::{BuildError, ParticipantService};
///
/// let err = ParticipantService::builder("bank a").build().unwrap_err();
/// assert_eq!(err, BuildError::InvalidName("bank a".into()));
/// ```
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The participant or an action name breaks the coordinator's naming rule.
    #[error("invalid name {0:?}: expected 1-128 characters of [A-Za-z0-9._:-]")]
    InvalidName(String),
    /// Two actions were registered under the same name.
    #[error("action {0:?} registered twice")]
    DuplicateAction(String),
    /// A participant with no action can never be called.
    #[error("no action registered")]
    NoActions,
}

#[derive(Clone)]
enum Handler {
    Tcc(Arc<dyn TccAction>),
    Saga(Arc<dyn SagaAction>),
    /// The compensation of a saga action registered under a name of its
    /// own: answers only `Compensate`.
    SagaCompensation(Arc<dyn SagaAction>),
}

impl Handler {
    fn kind(&self) -> &'static str {
        match self {
            Handler::Tcc(_) => "tcc",
            Handler::Saga(_) => "saga",
            Handler::SagaCompensation(_) => "saga compensation",
        }
    }
}

/// The gRPC `concord.participant.v1.Participant` service of one participant,
/// dispatching every call to the action registered under the request's
/// action name.
///
/// Cheap to clone. Unknown actions answer `NOT_FOUND` (retried by the
/// coordinator, so a rolling deploy that adds an action heals by itself); a
/// phase the action does not have (for example `Execute` on a TCC action)
/// answers `UNIMPLEMENTED`.
///
/// ```
/// use concord_sdk::{ActionError, ParticipantService};
///
/// let service = ParticipantService::builder("inventory")
///     .saga_fn(
///         "reserve",
///         |ctx| async move { Ok(Vec::new()) },
///         |ctx| async move { Ok(Vec::new()) },
///     )
///     .build()
///     .unwrap();
/// assert_eq!(service.name(), "inventory");
/// assert_eq!(service.actions(), vec!["reserve"]);
/// ```
#[derive(Clone)]
pub struct ParticipantService {
    name: Arc<str>,
    actions: Arc<HashMap<String, Handler>>,
}

impl fmt::Debug for ParticipantService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let actions: HashMap<&str, &str> = self
            .actions
            .iter()
            .map(|(name, h)| (name.as_str(), h.kind()))
            .collect();
        f.debug_struct("ParticipantService")
            .field("name", &self.name)
            .field("actions", &actions)
            .finish()
    }
}

impl ParticipantService {
    /// Starts a service for the participant `name` (the name initiators use
    /// in `try_branch` and the one registered with the coordinator).
    ///
    /// ```
    /// let service = concord_sdk::ParticipantService::builder("bank")
    ///     .saga_fn("pay", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .build()
    ///     .unwrap();
    /// # let _ = service;
    /// ```
    pub fn builder(name: impl Into<String>) -> ParticipantServiceBuilder {
        ParticipantServiceBuilder {
            name: name.into(),
            actions: Vec::new(),
        }
    }

    /// The participant name.
    ///
    /// ```
    /// let service = concord_sdk::ParticipantService::builder("bank")
    ///     .saga_fn("pay", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.name(), "bank");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registered action names, sorted.
    ///
    /// ```
    /// let service = concord_sdk::ParticipantService::builder("bank")
    ///     .saga_fn("pay", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .saga_fn("hold", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.actions(), ["hold", "pay"]);
    /// ```
    pub fn actions(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.actions.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Runs one call: finds the action, checks it has the phase, runs it and
    /// maps the outcome to a status.
    async fn dispatch(
        &self,
        op: Op,
        request: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        let ctx = BranchContext::from(request.into_inner());
        let span = tracing::info_span!(
            "branch_call",
            participant = %self.name,
            gid = %ctx.gid,
            branch_id = %ctx.branch_id,
            action = %ctx.action,
            op = op.as_str(),
            attempt = ctx.attempt,
        );
        async move {
            let Some(handler) = self.actions.get(&ctx.action) else {
                tracing::warn!("unknown action");
                return Err(Status::not_found(format!(
                    "participant {:?} has no action {:?}",
                    self.name, ctx.action
                )));
            };
            let Some(fut) = call(handler, op, ctx) else {
                tracing::warn!(kind = handler.kind(), "phase not supported by action");
                return Err(Status::unimplemented(format!(
                    "{} action does not support {op}",
                    handler.kind()
                )));
            };
            match fut.await {
                Ok(payload) => {
                    tracing::debug!(reply_len = payload.len(), "branch call succeeded");
                    Ok(Response::new(BranchResponse { payload }))
                }
                Err(e) => {
                    if e.is_rejected() {
                        tracing::info!(reason = %e, "branch call rejected");
                    } else {
                        tracing::warn!(error = %e, "branch call failed");
                    }
                    Err(e.to_status())
                }
            }
        }
        .instrument(span)
        .await
    }
}

type ActionFuture = std::pin::Pin<Box<dyn Future<Output = ActionResult> + Send + 'static>>;

/// The action's method for `op`, or `None` if its kind has no such phase.
fn call(handler: &Handler, op: Op, ctx: BranchContext) -> Option<ActionFuture> {
    // The `Arc` clone moves into the future so it is `'static` and does not
    // borrow the service.
    Some(match (handler.clone(), op) {
        (Handler::Tcc(a), Op::Try) => Box::pin(async move { a.try_(ctx).await }),
        (Handler::Tcc(a), Op::Confirm) => Box::pin(async move { a.confirm(ctx).await }),
        (Handler::Tcc(a), Op::Cancel) => Box::pin(async move { a.cancel(ctx).await }),
        (Handler::Saga(a), Op::Execute) => Box::pin(async move { a.execute(ctx).await }),
        (Handler::Saga(a) | Handler::SagaCompensation(a), Op::Compensate) => {
            Box::pin(async move { a.compensate(ctx).await })
        }
        _ => return None,
    })
}

#[tonic::async_trait]
impl Participant for ParticipantService {
    async fn r#try(
        &self,
        request: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        self.dispatch(Op::Try, request).await
    }
    async fn confirm(
        &self,
        request: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        self.dispatch(Op::Confirm, request).await
    }
    async fn cancel(
        &self,
        request: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        self.dispatch(Op::Cancel, request).await
    }
    async fn execute(
        &self,
        request: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        self.dispatch(Op::Execute, request).await
    }
    async fn compensate(
        &self,
        request: Request<BranchRequest>,
    ) -> Result<Response<BranchResponse>, Status> {
        self.dispatch(Op::Compensate, request).await
    }
}

/// Collects actions for a [`ParticipantService`]; see
/// [`ParticipantService::builder`].
///
/// ```
/// use concord_sdk::ParticipantService;
///
/// let builder = ParticipantService::builder("inventory")
///     .saga_fn_pair("reserve", "release", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) });
/// let service = builder.build().unwrap();
/// assert_eq!(service.actions(), ["release", "reserve"]);
/// ```
#[must_use]
pub struct ParticipantServiceBuilder {
    name: String,
    // A list, not a map, so `build` can report duplicates instead of
    // silently keeping the last registration.
    actions: Vec<(String, Handler)>,
}

impl fmt::Debug for ParticipantServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParticipantServiceBuilder")
            .field("name", &self.name)
            .field(
                "actions",
                &self.actions.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ParticipantServiceBuilder {
    /// Registers a TCC action under `name`.
    ///
    /// ```
    /// use concord_sdk::{ActionResult, BranchContext, ParticipantService, TccAction};
    ///
    /// struct Hold;
    ///
    /// #[concord_sdk::async_trait]
    /// impl TccAction for Hold {
    ///     async fn try_(&self, _ctx: BranchContext) -> ActionResult { Ok(Vec::new()) }
    ///     async fn confirm(&self, _ctx: BranchContext) -> ActionResult { Ok(Vec::new()) }
    ///     async fn cancel(&self, _ctx: BranchContext) -> ActionResult { Ok(Vec::new()) }
    /// }
    ///
    /// let service = ParticipantService::builder("hotel").tcc("hold_room", Hold).build().unwrap();
    /// assert_eq!(service.actions(), ["hold_room"]);
    /// ```
    pub fn tcc(mut self, name: impl Into<String>, action: impl TccAction) -> Self {
        self.actions
            .push((name.into(), Handler::Tcc(Arc::new(action))));
        self
    }

    /// Registers a saga action under `name`, for both its phases: a saga
    /// step using it names `name` as both its action and its compensation.
    /// To give the compensation a name of its own (`reserve` undone by
    /// `release`), use [`saga_pair`](Self::saga_pair).
    ///
    /// ```
    /// use concord_sdk::{ActionResult, BranchContext, ParticipantService, SagaAction};
    ///
    /// struct Reserve;
    ///
    /// #[concord_sdk::async_trait]
    /// impl SagaAction for Reserve {
    ///     async fn execute(&self, _ctx: BranchContext) -> ActionResult {
    ///         Ok(Vec::new())
    ///     }
    ///     async fn compensate(&self, _ctx: BranchContext) -> ActionResult {
    ///         Ok(Vec::new())
    ///     }
    /// }
    ///
    /// // Initiators use `.step("inventory", "reserve", "reserve", payload)`.
    /// let service = ParticipantService::builder("inventory")
    ///     .saga("reserve", Reserve)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.actions(), ["reserve"]);
    /// ```
    pub fn saga(mut self, name: impl Into<String>, action: impl SagaAction) -> Self {
        self.actions
            .push((name.into(), Handler::Saga(Arc::new(action))));
        self
    }

    /// Registers a saga action under `name`, and its compensation under the
    /// separate name `compensation`: the coordinator calls a step's
    /// compensation by the name the initiator gave it, so a step
    /// `("inventory", "reserve", "release", ..)` needs both names registered.
    /// `compensation` answers only compensations.
    ///
    /// ```
    /// use concord_sdk::{ActionResult, BranchContext, ParticipantService, SagaAction};
    ///
    /// struct Reserve;
    ///
    /// #[concord_sdk::async_trait]
    /// impl SagaAction for Reserve {
    ///     async fn execute(&self, _ctx: BranchContext) -> ActionResult {
    ///         Ok(Vec::new())
    ///     }
    ///     async fn compensate(&self, _ctx: BranchContext) -> ActionResult {
    ///         Ok(Vec::new())
    ///     }
    /// }
    ///
    /// // Initiators use `.step("inventory", "reserve", "release", payload)`.
    /// let service = ParticipantService::builder("inventory")
    ///     .saga_pair("reserve", "release", Reserve)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.actions(), ["release", "reserve"]);
    /// ```
    pub fn saga_pair(
        mut self,
        name: impl Into<String>,
        compensation: impl Into<String>,
        action: impl SagaAction,
    ) -> Self {
        let action: Arc<dyn SagaAction> = Arc::new(action);
        self.actions
            .push((name.into(), Handler::Saga(action.clone())));
        self.actions
            .push((compensation.into(), Handler::SagaCompensation(action)));
        self
    }

    /// Registers a TCC action made of three closures (try, confirm, cancel),
    /// each taking the [`BranchContext`] by value.
    ///
    /// ```
    /// use concord_sdk::ParticipantService;
    ///
    /// let service = ParticipantService::builder("bank")
    ///     .tcc_fn(
    ///         "transfer_out",
    ///         |_ctx| async { Ok(Vec::new()) },
    ///         |_ctx| async { Ok(Vec::new()) },
    ///         |_ctx| async { Ok(Vec::new()) },
    ///     )
    ///     .build()
    ///     .unwrap();
    /// # let _ = service;
    /// ```
    pub fn tcc_fn<T, TF, TR, C, CF, CR, X, XF, XR>(
        self,
        name: impl Into<String>,
        try_: T,
        confirm: C,
        cancel: X,
    ) -> Self
    where
        T: Fn(BranchContext) -> TF + Send + Sync + 'static,
        TF: Future<Output = Result<TR, ActionError>> + Send + 'static,
        TR: IntoReply,
        C: Fn(BranchContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
        CR: IntoReply,
        X: Fn(BranchContext) -> XF + Send + Sync + 'static,
        XF: Future<Output = Result<XR, ActionError>> + Send + 'static,
        XR: IntoReply,
    {
        self.tcc(
            name,
            TccFn {
                try_,
                confirm,
                cancel,
            },
        )
    }

    /// Registers a saga action made of two closures (execute, compensate),
    /// both under `name`; see [`saga`](Self::saga).
    ///
    /// ```
    /// use concord_sdk::ParticipantService;
    ///
    /// let service = ParticipantService::builder("inventory")
    ///     .saga_fn("reserve", |_ctx| async { Ok(Vec::new()) }, |_ctx| async { Ok(Vec::new()) })
    ///     .build()
    ///     .unwrap();
    /// # let _ = service;
    /// ```
    pub fn saga_fn<E, EF, ER, C, CF, CR>(
        self,
        name: impl Into<String>,
        execute: E,
        compensate: C,
    ) -> Self
    where
        E: Fn(BranchContext) -> EF + Send + Sync + 'static,
        EF: Future<Output = Result<ER, ActionError>> + Send + 'static,
        ER: IntoReply,
        C: Fn(BranchContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
        CR: IntoReply,
    {
        self.saga(
            name,
            SagaFn {
                execute,
                compensate,
            },
        )
    }

    /// Like [`saga_fn`](Self::saga_fn), with the compensation registered
    /// under a name of its own; see [`saga_pair`](Self::saga_pair).
    ///
    /// ```
    /// use concord_sdk::ParticipantService;
    ///
    /// let service = ParticipantService::builder("payment")
    ///     .saga_fn_pair(
    ///         "charge",
    ///         "refund",
    ///         |_ctx| async { Ok(Vec::new()) },
    ///         |_ctx| async { Ok(Vec::new()) },
    ///     )
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.actions(), ["charge", "refund"]);
    /// ```
    pub fn saga_fn_pair<E, EF, ER, C, CF, CR>(
        self,
        name: impl Into<String>,
        compensation: impl Into<String>,
        execute: E,
        compensate: C,
    ) -> Self
    where
        E: Fn(BranchContext) -> EF + Send + Sync + 'static,
        EF: Future<Output = Result<ER, ActionError>> + Send + 'static,
        ER: IntoReply,
        C: Fn(BranchContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
        CR: IntoReply,
    {
        self.saga_pair(
            name,
            compensation,
            SagaFn {
                execute,
                compensate,
            },
        )
    }

    /// Like [`tcc_fn`](Self::tcc_fn), with closures that also get a clone
    /// of `state` (a [`Barrier`](crate::Barrier), a pool...) on every call,
    /// so they need not clone it themselves.
    ///
    /// ```
    /// use concord_sdk::{Barrier, Op, ParticipantService};
    ///
    /// let service = ParticipantService::builder("bank")
    ///     .tcc_with(
    ///         "transfer_out",
    ///         Barrier::memory(),
    ///         |b, ctx| async move { b.run(&ctx, Op::Try, async |_| Ok(())).await },
    ///         |b, ctx| async move { b.run(&ctx, Op::Confirm, async |_| Ok(())).await },
    ///         |b, ctx| async move { b.run(&ctx, Op::Cancel, async |_| Ok(())).await },
    ///     )
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.actions(), ["transfer_out"]);
    /// ```
    pub fn tcc_with<S, T, TF, TR, C, CF, CR, X, XF, XR>(
        self,
        name: impl Into<String>,
        state: S,
        try_: T,
        confirm: C,
        cancel: X,
    ) -> Self
    where
        S: Clone + Send + Sync + 'static,
        T: Fn(S, BranchContext) -> TF + Send + Sync + 'static,
        TF: Future<Output = Result<TR, ActionError>> + Send + 'static,
        TR: IntoReply,
        C: Fn(S, BranchContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
        CR: IntoReply,
        X: Fn(S, BranchContext) -> XF + Send + Sync + 'static,
        XF: Future<Output = Result<XR, ActionError>> + Send + 'static,
        XR: IntoReply,
    {
        let (s1, s2, s3) = (state.clone(), state.clone(), state);
        self.tcc_fn(
            name,
            move |ctx| try_(s1.clone(), ctx),
            move |ctx| confirm(s2.clone(), ctx),
            move |ctx| cancel(s3.clone(), ctx),
        )
    }

    /// Like [`saga_fn_pair`](Self::saga_fn_pair), with closures that also
    /// get a clone of `state` on every call.
    ///
    /// ```
    /// use concord_sdk::{Barrier, Op, ParticipantService};
    ///
    /// let service = ParticipantService::builder("payment")
    ///     .saga_pair_with(
    ///         "charge",
    ///         "refund",
    ///         Barrier::memory(),
    ///         |b, ctx| async move { b.run(&ctx, Op::Execute, async |_| Ok(())).await },
    ///         |b, ctx| async move { b.run(&ctx, Op::Compensate, async |_| Ok(())).await },
    ///     )
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.actions(), ["charge", "refund"]);
    /// ```
    pub fn saga_pair_with<S, E, EF, ER, C, CF, CR>(
        self,
        name: impl Into<String>,
        compensation: impl Into<String>,
        state: S,
        execute: E,
        compensate: C,
    ) -> Self
    where
        S: Clone + Send + Sync + 'static,
        E: Fn(S, BranchContext) -> EF + Send + Sync + 'static,
        EF: Future<Output = Result<ER, ActionError>> + Send + 'static,
        ER: IntoReply,
        C: Fn(S, BranchContext) -> CF + Send + Sync + 'static,
        CF: Future<Output = Result<CR, ActionError>> + Send + 'static,
        CR: IntoReply,
    {
        let (s1, s2) = (state.clone(), state);
        self.saga_fn_pair(
            name,
            compensation,
            move |ctx| execute(s1.clone(), ctx),
            move |ctx| compensate(s2.clone(), ctx),
        )
    }

    /// Checks the names and builds the service.
    ///
    /// ```
    /// use concord_sdk::{BuildError, ParticipantService};
    ///
    /// assert_eq!(ParticipantService::builder("bank").build().unwrap_err(), BuildError::NoActions);
    /// ```
    pub fn build(self) -> Result<ParticipantService, BuildError> {
        if !is_valid_name(&self.name) {
            return Err(BuildError::InvalidName(self.name));
        }
        if self.actions.is_empty() {
            return Err(BuildError::NoActions);
        }
        let mut actions = HashMap::with_capacity(self.actions.len());
        for (name, handler) in self.actions {
            if !is_valid_name(&name) {
                return Err(BuildError::InvalidName(name));
            }
            if actions.contains_key(&name) {
                return Err(BuildError::DuplicateAction(name));
            }
            actions.insert(name, handler);
        }
        Ok(ParticipantService {
            name: self.name.into(),
            actions: Arc::new(actions),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tonic::Code;

    use super::*;

    /// Records every call so tests can check what was dispatched where.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Op, BranchContext)>>);

    impl Recorder {
        fn push(&self, op: Op, ctx: BranchContext) -> ActionResult {
            let reply = format!("{op}:{}", ctx.branch_id).into_bytes();
            let rejected = ctx.payload == b"reject";
            self.0.lock().unwrap().push((op, ctx));
            if rejected {
                return Err(ActionError::rejected("no"));
            }
            Ok(reply)
        }
    }

    #[tonic::async_trait]
    impl TccAction for Arc<Recorder> {
        async fn try_(&self, ctx: BranchContext) -> ActionResult {
            self.push(Op::Try, ctx)
        }
        async fn confirm(&self, ctx: BranchContext) -> ActionResult {
            self.push(Op::Confirm, ctx)
        }
        async fn cancel(&self, ctx: BranchContext) -> ActionResult {
            self.push(Op::Cancel, ctx)
        }
    }

    fn service(recorder: &Arc<Recorder>) -> ParticipantService {
        ParticipantService::builder("bank")
            .tcc("transfer_out", recorder.clone())
            .saga_fn(
                "reserve",
                |ctx| async move { Ok(format!("execute:{}", ctx.branch_id).into_bytes()) },
                |_| async { Err::<(), _>(ActionError::failed("database down")) },
            )
            .build()
            .unwrap()
    }

    fn request(action: &str, payload: &[u8]) -> Request<BranchRequest> {
        Request::new(BranchRequest {
            gid: "g1".into(),
            branch_id: "7".into(),
            action: action.into(),
            payload: payload.to_vec(),
            attempt: 2,
            metadata: [("traceparent".to_string(), "00-abc-def-01".to_string())].into(),
        })
    }

    #[tokio::test]
    async fn each_phase_reaches_the_matching_method_with_the_full_context() {
        let recorder = Arc::new(Recorder::default());
        let svc = service(&recorder);
        let reply = svc.r#try(request("transfer_out", b"p")).await.unwrap();
        assert_eq!(reply.into_inner().payload, b"try:7");
        svc.confirm(request("transfer_out", b"")).await.unwrap();
        svc.cancel(request("transfer_out", b"")).await.unwrap();

        let calls = recorder.0.lock().unwrap();
        let ops: Vec<Op> = calls.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, [Op::Try, Op::Confirm, Op::Cancel]);
        let (_, ctx) = &calls[0];
        assert_eq!((ctx.gid.as_str(), ctx.branch_id.as_str()), ("g1", "7"));
        assert_eq!((ctx.action.as_str(), ctx.attempt), ("transfer_out", 2));
        assert_eq!(ctx.payload, b"p");
        assert_eq!(ctx.traceparent(), Some("00-abc-def-01"));
    }

    #[tokio::test]
    async fn saga_closures_are_dispatched() {
        let svc = service(&Arc::default());
        let reply = svc.execute(request("reserve", b"")).await.unwrap();
        assert_eq!(reply.into_inner().payload, b"execute:7");
        let err = svc.compensate(request("reserve", b"")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn compensation_with_a_name_of_its_own_answers_only_compensate() {
        let svc = ParticipantService::builder("inventory")
            .saga_fn_pair(
                "reserve",
                "release",
                |ctx| async move { Ok(format!("execute:{}", ctx.action).into_bytes()) },
                |ctx| async move { Ok(format!("compensate:{}", ctx.action).into_bytes()) },
            )
            .build()
            .unwrap();
        assert_eq!(svc.actions(), ["release", "reserve"]);
        let undo = svc.compensate(request("release", b"")).await.unwrap();
        assert_eq!(undo.into_inner().payload, b"compensate:release");
        let undo = svc.compensate(request("reserve", b"")).await.unwrap();
        assert_eq!(undo.into_inner().payload, b"compensate:reserve");
        let err = svc.execute(request("release", b"")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("saga compensation"), "{err:?}");
    }

    #[test]
    fn a_compensation_name_clashing_with_an_action_is_refused() {
        let err = ParticipantService::builder("inventory")
            .saga_fn(
                "release",
                |_| async { Ok(Vec::new()) },
                |_| async { Ok(Vec::new()) },
            )
            .saga_fn_pair(
                "reserve",
                "release",
                |_| async { Ok(Vec::new()) },
                |_| async { Ok(Vec::new()) },
            )
            .build()
            .unwrap_err();
        assert_eq!(err, BuildError::DuplicateAction("release".into()));
    }

    #[tokio::test]
    async fn rejection_becomes_aborted() {
        let svc = service(&Arc::default());
        let err = svc
            .r#try(request("transfer_out", b"reject"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Aborted);
        assert_eq!(err.message(), "no");
    }

    #[tokio::test]
    async fn unknown_action_is_not_found() {
        let svc = service(&Arc::default());
        let err = svc.r#try(request("nope", b"")).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }

    #[tokio::test]
    async fn phase_of_the_other_mode_is_unimplemented() {
        let recorder = Arc::new(Recorder::default());
        let svc = service(&recorder);
        for err in [
            svc.execute(request("transfer_out", b"")).await.unwrap_err(),
            svc.compensate(request("transfer_out", b""))
                .await
                .unwrap_err(),
            svc.r#try(request("reserve", b"")).await.unwrap_err(),
            svc.confirm(request("reserve", b"")).await.unwrap_err(),
            svc.cancel(request("reserve", b"")).await.unwrap_err(),
        ] {
            assert_eq!(err.code(), Code::Unimplemented);
        }
        assert!(recorder.0.lock().unwrap().is_empty());
    }

    #[test]
    fn build_checks_names() {
        let ok = |_| async { Ok(Vec::new()) };
        let b = || ParticipantService::builder("bank");
        assert_eq!(
            ParticipantService::builder("bad name")
                .saga_fn("a", ok, ok)
                .build()
                .unwrap_err(),
            BuildError::InvalidName("bad name".into())
        );
        assert_eq!(
            b().saga_fn("a/b", ok, ok).build().unwrap_err(),
            BuildError::InvalidName("a/b".into())
        );
        assert_eq!(
            b().saga_fn("a", ok, ok)
                .saga_fn("a", ok, ok)
                .build()
                .unwrap_err(),
            BuildError::DuplicateAction("a".into())
        );
        assert_eq!(b().build().unwrap_err(), BuildError::NoActions);
        let svc = b()
            .saga_fn("b.2", ok, ok)
            .saga_fn("a:1", ok, ok)
            .build()
            .unwrap();
        assert_eq!(svc.actions(), ["a:1", "b.2"]);
    }
}
