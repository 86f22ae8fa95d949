//! [`ParticipantServiceBuilder`]: collects a participant's actions (trait
//! objects or closures, with or without shared state) and checks their
//! names once, in [`build`](ParticipantServiceBuilder::build).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::action::{SagaFn, TccFn};
use super::service::{ActionPolicy, Handler};
use super::{
    ActionError, BranchContext, IntoReply, ParticipantService, SagaAction, TccAction, is_valid_name,
};
use crate::CallPolicy;

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
    /// A call policy or timeout was given for an action not registered.
    #[error("policy for action {0:?}, which is not registered")]
    PolicyOfUnknownAction(String),
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
    /// Call timeout and policy declared per action at registration.
    policies: HashMap<String, ActionPolicy>,
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
    pub(super) fn new(name: String) -> Self {
        Self {
            name,
            actions: Vec::new(),
            policies: HashMap::new(),
        }
    }

    /// Declares the call policy of `action` (registered by another method
    /// of this builder) with the coordinator: every branch or saga step
    /// calling it that gives no policy of its own gets this one (part by
    /// part; the coordinator's settings fill the rest).
    ///
    /// ```
    /// use concord_sdk::{CallPolicy, ParticipantService};
    ///
    /// let service = ParticipantService::builder("bank")
    ///     .saga_fn("pay", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .policy("pay", CallPolicy::new().max_attempts(5).non_retryable(tonic::Code::NotFound))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(service.policy_of("pay").unwrap().1.unwrap().to_proto().max_attempts, 5);
    /// ```
    pub fn policy(mut self, action: impl Into<String>, policy: CallPolicy) -> Self {
        self.policies.entry(action.into()).or_default().policy = Some(policy);
        self
    }

    /// Declares the deadline of each call of `action`, like
    /// [`policy`](Self::policy).
    ///
    /// ```
    /// use std::time::Duration;
    /// use concord_sdk::ParticipantService;
    ///
    /// let service = ParticipantService::builder("bank")
    ///     .saga_fn("pay", |_| async { Ok(Vec::new()) }, |_| async { Ok(Vec::new()) })
    ///     .call_timeout("pay", Duration::from_secs(2))
    ///     .build()
    ///     .unwrap();
    /// assert!(service.policy_of("pay").unwrap().0.is_some());
    /// ```
    pub fn call_timeout(mut self, action: impl Into<String>, timeout: Duration) -> Self {
        self.policies.entry(action.into()).or_default().call_timeout = Some(timeout);
        self
    }

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
        if let Some(unknown) = self.policies.keys().find(|a| !actions.contains_key(*a)) {
            return Err(BuildError::PolicyOfUnknownAction(unknown.clone()));
        }
        Ok(ParticipantService {
            name: self.name.into(),
            actions: Arc::new(actions),
            policies: Arc::new(self.policies),
        })
    }
}
