//! `concord.v1.Registry`: participant registration and listing.

use std::sync::Arc;

use concord_proto::v1 as pb;
use concord_proto::v1::registry_server::Registry as RegistryService;
use tonic::{Request, Response, Status};

use super::guard::caller;
use super::{convert, guarded};
use crate::auth::Scope;
use crate::domain::{ActionName, Endpoint, ParticipantName, Protocol};
use crate::error::Error;
use crate::participant::client::ParticipantClients;
use crate::participant::registry::Registry;

/// Most actions one registration may carry.
pub const MAX_ACTIONS: usize = 1000;

pub struct RegistryApi {
    registry: Arc<Registry>,
    /// Told of every registration: a participant that registers is up.
    clients: Arc<ParticipantClients>,
}

impl RegistryApi {
    pub fn new(registry: Arc<Registry>, clients: Arc<ParticipantClients>) -> Self {
        Self { registry, clients }
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn register_participant(
        &self,
        request: Request<pb::RegisterParticipantRequest>,
    ) -> Result<Response<pb::RegisterParticipantResponse>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        guarded("RegisterParticipant", "", async {
            let name = ParticipantName::parse(req.name)?;
            // Registering (or replacing) an endpoint of `name` needs the
            // scope for `name`: nobody else can take a share of its calls.
            let caller = caller?;
            caller.require(Scope::Participant(name.as_str()))?;
            let protocol = convert::protocol(req.protocol)?;
            let endpoint = Endpoint::parse(req.endpoint, protocol)?;
            if req.actions.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "participant {name} registers no action"
                )));
            }
            if req.actions.len() > MAX_ACTIONS {
                return Err(Error::InvalidArgument(format!(
                    "{} actions, the limit is {MAX_ACTIONS}",
                    req.actions.len()
                )));
            }
            let actions = req
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let policy = convert::action_policy(&format!("actions[{i}]"), a)?;
                    Ok((ActionName::parse(a.name.clone())?, policy))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            self.registry.register(&name, &endpoint, &actions).await?;
            self.clients.registered(&name, &endpoint.url);
            tracing::info!(participant = %name, endpoint = %endpoint.url, protocol = %protocol, actions = actions.len(), identity = %caller.name, "participant registered");
            Ok(pb::RegisterParticipantResponse {})
        })
        .await
    }

    async fn list_participants(
        &self,
        _request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        guarded("ListParticipants", "", async {
            let all = self.registry.refresh().await?;
            Ok(pb::ListParticipantsResponse {
                participants: all
                    .into_iter()
                    .map(|p| pb::Participant {
                        name: p.name.to_string(),
                        actions: p
                            .actions
                            .into_iter()
                            .map(|a| {
                                convert::action(
                                    &a,
                                    &p.policies.get(&a).copied().unwrap_or_default(),
                                )
                            })
                            .collect(),
                        endpoints: p
                            .endpoints
                            .into_iter()
                            .map(|e| pb::Endpoint {
                                url: e.url.to_string(),
                                registered_at: Some(convert::timestamp(e.registered_at)),
                                last_seen_at: Some(convert::timestamp(e.last_seen_at)),
                                protocol: match e.protocol {
                                    Protocol::Grpc => pb::Protocol::Grpc,
                                    // Never registered; the closest there is.
                                    Protocol::Http | Protocol::Dtm => pb::Protocol::Http,
                                } as i32,
                            })
                            .collect(),
                    })
                    .collect(),
            })
        })
        .await
    }
}
