//! The 2-phase message RPCs of `concord.v1.Coordinator` (PrepareMessage,
//! SubmitMessage, AbortMessage): parse the request into domain values and
//! call the engine; `coordinator.rs` routes the trait's methods here.

use concord_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::coordinator::{CoordinatorApi, gid};
use super::guard::caller;
use super::{convert, guarded};
use crate::domain::{ActionName, Endpoint, ParticipantName};
use crate::engine::msg::{MsgRequest, MsgStepRequest};
use crate::error::Error;
use crate::machine::msg::Command;

/// Longest abort reason kept.
const MAX_REASON: usize = crate::domain::MAX_REASON;

impl CoordinatorApi {
    pub(super) async fn prepare_msg(
        &self,
        request: Request<pb::PrepareMessageRequest>,
    ) -> Result<Response<pb::PrepareMessageResponse>, Status> {
        let mut metadata = request.get_ref().metadata.clone().into_iter().collect();
        crate::telemetry::trace::inherit(request.metadata(), &mut metadata);
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("PrepareMessage", &req.gid.clone(), async {
            let initiator = caller?.recorded();
            let gid = if req.gid.is_empty() {
                None
            } else {
                Some(gid(&req.gid)?)
            };
            let protocol = convert::protocol(req.query_protocol)?;
            let query = Endpoint::parse(req.query_endpoint, protocol)
                .map_err(|e| Error::InvalidArgument(format!("query_endpoint: {}", e.0)))?;
            let timeout = convert::optional_duration("timeout", req.timeout.as_ref())?;
            let steps = req
                .steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let step = |e: crate::domain::InvalidValue| {
                        Error::InvalidArgument(format!("steps[{i}]: {}", e.0))
                    };
                    Ok(MsgStepRequest {
                        participant: ParticipantName::parse(s.participant).map_err(step)?,
                        action: ActionName::parse(s.action).map_err(step)?,
                        payload: s.payload,
                        call_timeout: convert::optional_duration(
                            &format!("steps[{i}]: call_timeout"),
                            s.call_timeout.as_ref(),
                        )?,
                        url_call: None,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let gid = self
                .engine
                .prepare_msg(MsgRequest {
                    gid,
                    steps,
                    query: Some(query),
                    timeout,
                    metadata,
                    initiator,
                })
                .await?;
            Ok(pb::PrepareMessageResponse {
                gid: gid.to_string(),
            })
        })
        .await
    }

    pub(super) async fn submit_msg(
        &self,
        request: Request<pb::SubmitMessageRequest>,
    ) -> Result<Response<pb::SubmitMessageResponse>, Status> {
        let until = self.wait_until(&request, request.get_ref().wait);
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("SubmitMessage", &req.gid.clone(), async {
            let gid = gid(&req.gid)?;
            let caller = caller?;
            self.may_act_on(&caller, &gid).await?;
            let status = self
                .engine
                .command_msg(&gid, Command::Submit, until)
                .await?;
            Ok(pb::SubmitMessageResponse {
                status: convert::status(status) as i32,
            })
        })
        .await
    }

    pub(super) async fn abort_msg(
        &self,
        request: Request<pb::AbortMessageRequest>,
    ) -> Result<Response<pb::AbortMessageResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("AbortMessage", &req.gid.clone(), async {
            let gid = gid(&req.gid)?;
            let caller = caller?;
            self.may_act_on(&caller, &gid).await?;
            if req.reason.len() > MAX_REASON {
                return Err(Error::InvalidArgument(format!(
                    "reason is {} bytes, the limit is {MAX_REASON}",
                    req.reason.len()
                )));
            }
            let reason = if req.reason.is_empty() {
                "aborted by the initiator".to_string()
            } else {
                req.reason
            };
            let status = self
                .engine
                .command_msg(&gid, Command::Abort { reason }, None)
                .await?;
            Ok(pb::AbortMessageResponse {
                status: convert::status(status) as i32,
            })
        })
        .await
    }
}
