//! `concord.v1.Coordinator`: parses requests into domain values and calls
//! the engine. The guard ([`super::guard`]) has authenticated the caller and
//! checked the initiator scope of the methods that begin a transaction;
//! here, a transaction's later calls are allowed to its initiator and to
//! admins only ([`CoordinatorApi::may_act_on`]).

use std::sync::Arc;

use concord_proto::v1 as pb;
use concord_proto::v1::coordinator_server::Coordinator;
use tonic::{Request, Response, Status};

use super::guard::caller;
use super::{convert, grpc_timeout, guarded};
use crate::auth::Identity;
use crate::domain::{ActionName, BranchId, Gid, ParticipantName};
use crate::engine::saga::{SagaRequest, StepRequest};
use crate::engine::{Engine, TryBranch};
use crate::error::Error;

pub struct CoordinatorApi {
    pub(super) engine: Arc<Engine>,
}

impl CoordinatorApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Until when a `wait` may last (see [`Engine::wait_until`]).
    pub(super) fn wait_until<T>(
        &self,
        req: &Request<T>,
        wait: bool,
    ) -> Option<tokio::time::Instant> {
        if !wait {
            return None;
        }
        Some(self.engine.wait_until(grpc_timeout(req.metadata())))
    }

    /// `Ok` when `caller` began `gid` or is an admin ([`super::guard::may_act_on`]).
    pub(super) async fn may_act_on(&self, caller: &Identity, gid: &Gid) -> Result<(), Error> {
        super::guard::may_act_on(&self.engine, caller, gid).await
    }
}

pub(super) fn gid(raw: &str) -> Result<Gid, Error> {
    Ok(Gid::parse(raw)?)
}

#[tonic::async_trait]
impl Coordinator for CoordinatorApi {
    async fn begin(
        &self,
        request: Request<pb::BeginRequest>,
    ) -> Result<Response<pb::BeginResponse>, Status> {
        let mut metadata = request.get_ref().metadata.clone().into_iter().collect();
        crate::telemetry::trace::inherit(request.metadata(), &mut metadata);
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("Begin", &req.gid.clone(), async {
            let initiator = caller?.recorded();
            let gid = if req.gid.is_empty() {
                None
            } else {
                Some(gid(&req.gid)?)
            };
            let timeout = convert::optional_duration("timeout", req.timeout.as_ref())?;
            let (gid, deadline) = self.engine.begin(gid, timeout, metadata, initiator).await?;
            Ok(pb::BeginResponse {
                gid: gid.to_string(),
                deadline: Some(convert::timestamp(deadline)),
            })
        })
        .await
    }

    async fn r#try(
        &self,
        request: Request<pb::TryRequest>,
    ) -> Result<Response<pb::TryResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("Try", &req.gid.clone(), async {
            let caller = caller?;
            let call_timeout =
                convert::optional_duration("call_timeout", req.call_timeout.as_ref())?;
            let branch = TryBranch {
                gid: gid(&req.gid)?,
                participant: ParticipantName::parse(req.participant)?,
                action: ActionName::parse(req.action)?,
                payload: req.payload,
                branch_id: if req.branch_id.is_empty() {
                    None
                } else {
                    Some(BranchId::parse(req.branch_id)?)
                },
                call_timeout,
                policy: convert::call_policy("policy", req.policy.as_ref())?,
            };
            self.may_act_on(&caller, &branch.gid).await?;
            let (branch_id, payload) = self.engine.try_branch(branch).await?;
            Ok(pb::TryResponse {
                branch_id: branch_id.to_string(),
                payload,
            })
        })
        .await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let until = self.wait_until(&request, request.get_ref().wait);
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("Commit", &req.gid.clone(), async {
            let gid = gid(&req.gid)?;
            let caller = caller?;
            self.may_act_on(&caller, &gid).await?;
            let status = self.engine.commit(&gid, until).await?;
            Ok(pb::CommitResponse {
                status: convert::status(status) as i32,
            })
        })
        .await
    }

    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let until = self.wait_until(&request, request.get_ref().wait);
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("Rollback", &req.gid.clone(), async {
            let gid = gid(&req.gid)?;
            let caller = caller?;
            self.may_act_on(&caller, &gid).await?;
            let reason = if req.reason.is_empty() {
                "rolled back by the initiator".to_string()
            } else {
                req.reason
            };
            let status = self.engine.rollback(&gid, reason, until).await?;
            Ok(pb::RollbackResponse {
                status: convert::status(status) as i32,
            })
        })
        .await
    }

    async fn submit_saga(
        &self,
        request: Request<pb::SubmitSagaRequest>,
    ) -> Result<Response<pb::SubmitSagaResponse>, Status> {
        let until = self.wait_until(&request, request.get_ref().wait);
        let mut metadata = request.get_ref().metadata.clone().into_iter().collect();
        crate::telemetry::trace::inherit(request.metadata(), &mut metadata);
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("SubmitSaga", &req.gid.clone(), async {
            let initiator = caller?.recorded();
            let gid = if req.gid.is_empty() {
                None
            } else {
                Some(gid(&req.gid)?)
            };
            let timeout = convert::optional_duration("timeout", req.timeout.as_ref())?;
            let steps = req
                .steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let step = |e: crate::domain::InvalidValue| {
                        Error::InvalidArgument(format!("steps[{i}]: {}", e.0))
                    };
                    Ok(StepRequest {
                        participant: ParticipantName::parse(s.participant).map_err(step)?,
                        action: ActionName::parse(s.action).map_err(step)?,
                        compensation: ActionName::parse(s.compensation).map_err(|e| {
                            Error::InvalidArgument(format!("steps[{i}]: compensation: {}", e.0))
                        })?,
                        payload: s.payload,
                        depends_on: s.depends_on.into_iter().map(|d| d as usize).collect(),
                        compensate_rejected: s.compensate_rejected.unwrap_or(true),
                        call_timeout: convert::optional_duration(
                            &format!("steps[{i}]: call_timeout"),
                            s.call_timeout.as_ref(),
                        )?,
                        policy: convert::call_policy(
                            &format!("steps[{i}]: policy"),
                            s.policy.as_ref(),
                        )?,
                        url_call: None,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let (gid, status, reason) = self
                .engine
                .submit_saga(
                    SagaRequest {
                        gid,
                        steps,
                        timeout,
                        metadata,
                        concurrency: Some(req.concurrency),
                        initiator,
                        dependencies_as_given: false,
                    },
                    until,
                )
                .await?;
            Ok(pb::SubmitSagaResponse {
                gid: gid.to_string(),
                status: convert::status(status) as i32,
                reason: reason.unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("GetTransaction", &req.gid.clone(), async {
            let caller = caller?;
            let gid = gid(&req.gid)?;
            // Read first: the record says who began it (one read, not two).
            let (tx, branches, events) = self.engine.get(&gid, req.include_events).await?;
            caller.may_act_on(gid.as_str(), tx.initiator.as_deref())?;
            Ok(convert::transaction(&tx, &branches, &events))
        })
        .await
    }

    async fn prepare_message(
        &self,
        request: Request<pb::PrepareMessageRequest>,
    ) -> Result<Response<pb::PrepareMessageResponse>, Status> {
        self.prepare_msg(request).await
    }

    async fn submit_message(
        &self,
        request: Request<pb::SubmitMessageRequest>,
    ) -> Result<Response<pb::SubmitMessageResponse>, Status> {
        self.submit_msg(request).await
    }

    async fn abort_message(
        &self,
        request: Request<pb::AbortMessageRequest>,
    ) -> Result<Response<pb::AbortMessageResponse>, Status> {
        self.abort_msg(request).await
    }
}
