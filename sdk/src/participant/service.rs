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

use super::{ActionResult, BranchContext, Op, ParticipantServiceBuilder, SagaAction, TccAction};

#[derive(Clone)]
pub(super) enum Handler {
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
    pub(super) name: Arc<str>,
    pub(super) actions: Arc<HashMap<String, Handler>>,
    /// What the builder declared per action, sent with the registration.
    pub(super) policies: Arc<HashMap<String, ActionPolicy>>,
}

/// The call timeout and policy declared for one action.
#[derive(Clone, Debug, Default)]
pub(super) struct ActionPolicy {
    pub(super) call_timeout: Option<std::time::Duration>,
    pub(super) policy: Option<crate::CallPolicy>,
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
        ParticipantServiceBuilder::new(name.into())
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

    /// The call timeout and policy declared for `action` with
    /// [`ParticipantServiceBuilder::policy`] and
    /// [`ParticipantServiceBuilder::call_timeout`], sent to the coordinator
    /// when the service registers; `None` when neither was.
    ///
    /// ```
    /// let service = concord_sdk::ParticipantService::builder("bank")
    ///     .saga_fn("pay", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .build()
    ///     .unwrap();
    /// assert!(service.policy_of("pay").is_none());
    /// ```
    pub fn policy_of(
        &self,
        action: &str,
    ) -> Option<(Option<std::time::Duration>, Option<crate::CallPolicy>)> {
        self.policies
            .get(action)
            .map(|p| (p.call_timeout, p.policy.clone()))
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tonic::Code;

    use super::*;
    use crate::{ActionError, BuildError};

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
