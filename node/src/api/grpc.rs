//! The public gRPC API (`floe.v1`): wire types in, service calls, wire types out.

use std::sync::Arc;

use axum::body::Bytes;
use floe_proto::v1 as pb;
use floe_proto::v1::access_keys_server::AccessKeys;
use floe_proto::v1::cluster_server::Cluster;
use floe_proto::v1::functions_server::Functions;
use floe_raft_store::model::{self, AliasRecord, FunctionRecord, VersionRecord, LATEST};
use tonic::{Request, Response, Status};

use crate::error::into_status;
use crate::service::events::EventConfigChange;
use crate::service::functions::{alias_routing, AliasUpdate, FunctionUpdate};
use crate::service::invoke::{InvocationType, InvokeOptions};
use crate::service::logs::LogRecord;
use crate::service::{Consistency, Service};

#[derive(Clone)]
pub struct PublicApi {
    pub service: Arc<Service>,
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Reply<T> {
    Ok(Response::new(value))
}

fn consistency(value: i32) -> Consistency {
    match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::Stale) => Consistency::Stale,
        _ => Consistency::Linearizable,
    }
}

fn parse_config(config: Option<pb::FunctionConfig>) -> Result<model::FunctionConfig, Status> {
    let config = config.ok_or_else(|| Status::invalid_argument("config is required"))?;
    Ok(model::FunctionConfig {
        runtime: config.runtime,
        handler: config.handler,
        memory_mb: config.memory_mb,
        timeout_s: config.timeout_s,
        environment: config.environment,
        description: config.description,
    })
}

fn into_config(config: model::FunctionConfig) -> pb::FunctionConfig {
    pb::FunctionConfig {
        runtime: config.runtime,
        handler: config.handler,
        memory_mb: config.memory_mb,
        timeout_s: config.timeout_s,
        environment: config.environment,
        description: config.description,
    }
}

fn into_code(code: model::CodeRef) -> pb::CodeRef {
    pb::CodeRef {
        sha256: code.sha256,
        size: code.size,
    }
}

fn into_function(record: FunctionRecord) -> pb::FunctionInfo {
    pb::FunctionInfo {
        name: record.name,
        config: Some(into_config(record.config)),
        code: Some(into_code(record.code)),
        revision_id: record.revision_id,
        created_at_ms: record.created_at_ms,
        last_modified_ms: record.last_modified_ms,
        latest_version: record.latest_version,
        reserved_concurrency: record.reserved_concurrency,
    }
}

fn into_version(record: VersionRecord) -> pb::VersionInfo {
    pb::VersionInfo {
        function: record.function,
        version: record.version.to_string(),
        config: Some(into_config(record.config)),
        code: Some(into_code(record.code)),
        description: record.description,
        created_at_ms: record.created_at_ms,
    }
}

fn into_alias(record: AliasRecord) -> pb::AliasInfo {
    pb::AliasInfo {
        function: record.function,
        name: record.name,
        version: record.version,
        routing: record.routing.map(|r| pb::AliasRouting {
            additional_version: r.additional_version.to_string(),
            weight: r.weight,
        }),
        description: record.description,
        revision_id: record.revision_id,
    }
}

pub fn into_log_record(record: LogRecord) -> pb::LogRecord {
    pb::LogRecord {
        time_ms: record.time_ms,
        node_id: record.node_id,
        version: record.version,
        request_id: record.request_id,
        text: record.text,
    }
}

/// `None` or an empty additional version means "no routing".
fn parse_routing(routing: Option<pb::AliasRouting>) -> Result<Option<model::AliasRouting>, Status> {
    match routing {
        None => Ok(None),
        Some(r) => alias_routing(&r.additional_version, r.weight).map_err(into_status),
    }
}

#[tonic::async_trait]
impl Functions for PublicApi {
    async fn create_function(&self, request: Request<pb::CreateFunctionRequest>) -> Reply<pb::FunctionInfo> {
        let request = request.into_inner();
        let config = parse_config(request.config)?;
        let (record, _) = self
            .service
            .functions
            .create(&request.name, config, &request.zip_file, false)
            .await
            .map_err(into_status)?;
        ok(into_function(record))
    }

    async fn get_function(&self, request: Request<pb::GetFunctionRequest>) -> Reply<pb::FunctionInfo> {
        let request = request.into_inner();
        let record = self
            .service
            .functions
            .get(&request.name, consistency(request.consistency))
            .await
            .map_err(into_status)?;
        ok(into_function(record))
    }

    async fn list_functions(&self, request: Request<pb::ListFunctionsRequest>) -> Reply<pb::ListFunctionsResponse> {
        let records = self
            .service
            .functions
            .list(consistency(request.get_ref().consistency))
            .await
            .map_err(into_status)?;
        ok(pb::ListFunctionsResponse {
            functions: records.into_iter().map(into_function).collect(),
        })
    }

    async fn update_function(&self, request: Request<pb::UpdateFunctionRequest>) -> Reply<pb::FunctionInfo> {
        let request = request.into_inner();
        let update = FunctionUpdate {
            runtime: request.runtime,
            handler: request.handler,
            memory_mb: request.memory_mb,
            timeout_s: request.timeout_s,
            environment: request.environment.map(|e| e.variables),
            description: request.description,
            zip_file: request.zip_file,
            expected_revision_id: request.expected_revision_id,
            publish: false,
        };
        let (record, _) = self
            .service
            .functions
            .update(&request.name, update)
            .await
            .map_err(into_status)?;
        ok(into_function(record))
    }

    async fn delete_function(&self, request: Request<pb::DeleteFunctionRequest>) -> Reply<pb::DeleteFunctionResponse> {
        self.service
            .functions
            .delete(&request.get_ref().name)
            .await
            .map_err(into_status)?;
        ok(pb::DeleteFunctionResponse {})
    }

    async fn put_function_concurrency(
        &self,
        request: Request<pb::PutFunctionConcurrencyRequest>,
    ) -> Reply<pb::FunctionInfo> {
        let request = request.into_inner();
        let record = self
            .service
            .functions
            .put_concurrency(&request.name, request.reserved_concurrency)
            .await
            .map_err(into_status)?;
        ok(into_function(record))
    }

    async fn publish_version(&self, request: Request<pb::PublishVersionRequest>) -> Reply<pb::VersionInfo> {
        let request = request.into_inner();
        let record = self
            .service
            .functions
            .publish_version(
                &request.name,
                &request.description,
                request.expected_revision_id,
                request.expected_code_sha256,
            )
            .await
            .map_err(into_status)?;
        ok(into_version(record))
    }

    async fn list_versions(&self, request: Request<pb::ListVersionsRequest>) -> Reply<pb::ListVersionsResponse> {
        let request = request.into_inner();
        let (function, versions) = self
            .service
            .functions
            .list_versions(&request.name, consistency(request.consistency))
            .await
            .map_err(into_status)?;
        let latest = pb::VersionInfo {
            function: function.name.clone(),
            version: LATEST.to_string(),
            config: Some(into_config(function.config)),
            code: Some(into_code(function.code)),
            description: String::new(),
            created_at_ms: function.last_modified_ms,
        };
        ok(pb::ListVersionsResponse {
            versions: std::iter::once(latest)
                .chain(versions.into_iter().map(into_version))
                .collect(),
        })
    }

    async fn create_alias(&self, request: Request<pb::CreateAliasRequest>) -> Reply<pb::AliasInfo> {
        let request = request.into_inner();
        let routing = parse_routing(request.routing)?;
        let record = self
            .service
            .functions
            .create_alias(
                &request.function,
                &request.name,
                &request.version,
                routing,
                &request.description,
            )
            .await
            .map_err(into_status)?;
        ok(into_alias(record))
    }

    async fn update_alias(&self, request: Request<pb::UpdateAliasRequest>) -> Reply<pb::AliasInfo> {
        let request = request.into_inner();
        let routing = match request.routing {
            None => None,
            Some(routing) => Some(parse_routing(Some(routing))?),
        };
        let update = AliasUpdate {
            version: request.version,
            routing,
            description: request.description,
            expected_revision_id: request.expected_revision_id,
        };
        let record = self
            .service
            .functions
            .update_alias(&request.function, &request.name, update)
            .await
            .map_err(into_status)?;
        ok(into_alias(record))
    }

    async fn get_alias(&self, request: Request<pb::GetAliasRequest>) -> Reply<pb::AliasInfo> {
        let request = request.into_inner();
        let record = self
            .service
            .functions
            .get_alias(&request.function, &request.name, consistency(request.consistency))
            .await
            .map_err(into_status)?;
        ok(into_alias(record))
    }

    async fn list_aliases(&self, request: Request<pb::ListAliasesRequest>) -> Reply<pb::ListAliasesResponse> {
        let request = request.into_inner();
        let records = self
            .service
            .functions
            .list_aliases(&request.function, consistency(request.consistency))
            .await
            .map_err(into_status)?;
        ok(pb::ListAliasesResponse {
            aliases: records.into_iter().map(into_alias).collect(),
        })
    }

    async fn delete_alias(&self, request: Request<pb::DeleteAliasRequest>) -> Reply<pb::DeleteAliasResponse> {
        let request = request.into_inner();
        self.service
            .functions
            .delete_alias(&request.function, &request.name)
            .await
            .map_err(into_status)?;
        ok(pb::DeleteAliasResponse {})
    }

    async fn invoke(&self, request: Request<pb::InvokeRequest>) -> Reply<pb::InvokeResponse> {
        let request = request.into_inner();
        let invocation_type = match pb::InvocationType::try_from(request.invocation_type) {
            Ok(pb::InvocationType::RequestResponse) => InvocationType::RequestResponse,
            Ok(pb::InvocationType::Event) => InvocationType::Event,
            Ok(pb::InvocationType::DryRun) => InvocationType::DryRun,
            Err(_) => return Err(Status::invalid_argument("unknown invocation type")),
        };
        let options = InvokeOptions {
            invocation_type,
            log_tail: request.log_tail,
            client_context: (!request.client_context.is_empty()).then_some(request.client_context),
            region: (!request.region.is_empty()).then_some(request.region),
            max_retry_attempts: request.max_retry_attempts,
            max_event_age_s: request.max_event_age_s,
        };
        let result = self
            .service
            .invocations
            .invoke(
                &request.function,
                &request.qualifier,
                Bytes::from(request.payload),
                options,
            )
            .await
            .map_err(into_status)?;
        ok(pb::InvokeResponse {
            payload: result.payload.to_vec(),
            function_error: result.function_error.unwrap_or_default(),
            executed_version: result.executed_version,
            request_id: result.request_id,
            node_id: result.node_id,
            log_result: result.log_tail.unwrap_or_default(),
            cold_start: result.cold_start,
            status_code: u32::from(result.status_code),
        })
    }

    async fn put_event_invoke_config(
        &self,
        request: Request<pb::PutEventInvokeConfigRequest>,
    ) -> Reply<pb::EventInvokeConfig> {
        let request = request.into_inner();
        let change = EventConfigChange {
            max_retry_attempts: request.max_retry_attempts,
            max_event_age_s: request.max_event_age_s,
            on_success: request.on_success.map(|d| (!d.is_empty()).then_some(d)),
            on_failure: request.on_failure.map(|d| (!d.is_empty()).then_some(d)),
        };
        let config = self
            .service
            .events
            .put_config(&request.function, &request.qualifier, change)
            .await
            .map_err(into_status)?;
        ok(into_event_invoke_config(config))
    }

    async fn get_event_invoke_config(
        &self,
        request: Request<pb::GetEventInvokeConfigRequest>,
    ) -> Reply<pb::EventInvokeConfig> {
        let request = request.into_inner();
        let config = self
            .service
            .events
            .get_config(&request.function, &request.qualifier)
            .await
            .map_err(into_status)?;
        ok(into_event_invoke_config(config))
    }

    async fn delete_event_invoke_config(
        &self,
        request: Request<pb::GetEventInvokeConfigRequest>,
    ) -> Reply<pb::DeleteEventInvokeConfigResponse> {
        let request = request.into_inner();
        self.service
            .events
            .delete_config(&request.function, &request.qualifier)
            .await
            .map_err(into_status)?;
        ok(pb::DeleteEventInvokeConfigResponse {})
    }

    async fn list_failed_events(
        &self,
        request: Request<pb::ListFailedEventsRequest>,
    ) -> Reply<pb::ListFailedEventsResponse> {
        let events = self
            .service
            .events
            .list_failed(&request.get_ref().function)
            .await
            .map_err(into_status)?;
        ok(pb::ListFailedEventsResponse {
            events: events
                .into_iter()
                .map(|failed| pb::FailedEventInfo {
                    id: failed.event.id,
                    function: failed.event.function,
                    qualifier: failed.event.qualifier,
                    payload: failed.event.payload,
                    condition: failed.condition.as_str().to_string(),
                    attempts: failed.event.attempts,
                    last_error: failed.event.last_error.unwrap_or_default(),
                    accepted_ms: failed.event.accepted_ms,
                    failed_ms: failed.failed_ms,
                })
                .collect(),
        })
    }

    async fn list_queued_events(
        &self,
        request: Request<pb::ListQueuedEventsRequest>,
    ) -> Reply<pb::ListQueuedEventsResponse> {
        let events = self
            .service
            .events
            .list_queued(&request.get_ref().function)
            .await
            .map_err(into_status)?;
        ok(pb::ListQueuedEventsResponse {
            events: events
                .into_iter()
                .map(|event| pb::QueuedEventInfo {
                    id: event.id,
                    qualifier: event.qualifier,
                    attempts: event.attempts,
                    accepted_ms: event.accepted_ms,
                    due_ms: event.due_ms,
                    last_error: event.last_error.unwrap_or_default(),
                    max_retry_attempts: event.max_retry_attempts,
                    max_event_age_s: event.max_event_age_s,
                })
                .collect(),
        })
    }

    async fn replay_failed_events(&self, request: Request<pb::FailedEventsRequest>) -> Reply<pb::FailedEventsResponse> {
        let request = request.into_inner();
        let count = self
            .service
            .events
            .replay_failed(&request.function, request.ids)
            .await
            .map_err(into_status)?;
        ok(pb::FailedEventsResponse { count })
    }

    async fn delete_failed_events(&self, request: Request<pb::FailedEventsRequest>) -> Reply<pb::FailedEventsResponse> {
        let request = request.into_inner();
        let count = self
            .service
            .events
            .delete_failed(&request.function, request.ids)
            .await
            .map_err(into_status)?;
        ok(pb::FailedEventsResponse { count })
    }

    async fn get_logs(&self, request: Request<pb::GetLogsRequest>) -> Reply<pb::GetLogsResponse> {
        let request = request.into_inner();
        let records = self
            .service
            .logs
            .cluster(&request.function, request.since_ms, request.limit)
            .await
            .map_err(into_status)?;
        ok(pb::GetLogsResponse {
            records: records.into_iter().map(into_log_record).collect(),
        })
    }
}

fn into_access_key(key: model::AccessKeyRecord) -> pb::AccessKeyInfo {
    pb::AccessKeyInfo {
        access_key_id: key.id,
        description: key.description,
        created_ms: key.created_ms,
    }
}

#[tonic::async_trait]
impl AccessKeys for PublicApi {
    async fn create_access_key(
        &self,
        request: Request<pb::CreateAccessKeyRequest>,
    ) -> Reply<pb::CreateAccessKeyResponse> {
        let (key, secret_access_key) = self
            .service
            .access
            .create_key(&request.get_ref().description)
            .await
            .map_err(into_status)?;
        ok(pb::CreateAccessKeyResponse {
            key: Some(into_access_key(key)),
            secret_access_key,
        })
    }

    async fn list_access_keys(
        &self,
        _request: Request<pb::ListAccessKeysRequest>,
    ) -> Reply<pb::ListAccessKeysResponse> {
        let keys = self.service.access.list_keys().await.map_err(into_status)?;
        ok(pb::ListAccessKeysResponse {
            keys: keys.into_iter().map(into_access_key).collect(),
        })
    }

    async fn delete_access_key(
        &self,
        request: Request<pb::DeleteAccessKeyRequest>,
    ) -> Reply<pb::DeleteAccessKeyResponse> {
        self.service
            .access
            .delete_key(&request.get_ref().access_key_id)
            .await
            .map_err(into_status)?;
        ok(pb::DeleteAccessKeyResponse {})
    }
}

#[tonic::async_trait]
impl Cluster for PublicApi {
    async fn status(&self, _request: Request<pb::ClusterStatusRequest>) -> Reply<pb::ClusterStatus> {
        let view = self.service.membership.cluster_view().await.map_err(into_status)?;
        let (leader_id, leader_address) = match view.leader {
            Some((id, address)) => (Some(id), address),
            None => (None, String::new()),
        };
        ok(pb::ClusterStatus {
            node_id: view.node_id,
            leader_id,
            leader_address,
            term: view.term,
            last_log_index: view.last_log_index,
            applied_index: view.applied_index,
            snapshot_index: view.snapshot_index,
            purged_index: view.purged_index,
            nodes: view
                .members
                .into_iter()
                .map(|m| pb::NodeStatus {
                    id: m.id,
                    address: m.address,
                    peer_address: m.peer_address,
                    region: m.region,
                    role: m.role,
                    voter: m.voter,
                    matched_index: m.matched_index,
                    load: view
                        .load
                        .as_ref()
                        .and_then(|l| l.nodes.iter().find(|n| n.node == m.id))
                        .map(|n| pb::NodeLoad {
                            running: n.running,
                            idle_sandboxes: n.idle,
                            free_memory_mb: n.free_mb,
                            memory_capacity_mb: n.capacity_mb,
                            last_heartbeat_ms: n.last_heartbeat_ms,
                            live: n.live,
                        }),
                    sandbox_mode: m.sandbox_mode,
                    certificate_expires_ms: m.certificate_expires_ms,
                })
                .collect(),
            quotas: view
                .quotas
                .into_iter()
                .map(|(region, concurrency)| pb::RegionQuota { region, concurrency })
                .collect(),
            usage: view
                .usage
                .into_iter()
                .map(|(region, running, quota)| pb::RegionUsage { region, running, quota })
                .collect(),
            workers: view
                .workers
                .into_iter()
                .map(|(name, state)| pb::WorkerStatus {
                    name,
                    state: state.to_string(),
                })
                .collect(),
            unknown_key_barriers: self.service.access.unknown_key_barriers(),
            unverified_body_bytes_peak: self.service.access.unverified.peak_bytes(),
        })
    }

    async fn add_node(&self, request: Request<pb::AddNodeRequest>) -> Reply<pb::AddNodeResponse> {
        let address = request.into_inner().address;
        if address.is_empty() {
            return Err(Status::invalid_argument("address is required"));
        }
        let node_id = self.service.membership.add_node(&address).await.map_err(into_status)?;
        ok(pb::AddNodeResponse { node_id })
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Reply<pb::CreateJoinTokenResponse> {
        let request = request.into_inner();
        let ttl = std::time::Duration::from_secs(if request.ttl_seconds == 0 {
            3600
        } else {
            request.ttl_seconds
        });
        let uses = (request.uses > 0).then_some(request.uses);
        let (token, expires_ms) = self
            .service
            .membership
            .create_join_token(ttl, uses)
            .await
            .map_err(into_status)?;
        ok(pb::CreateJoinTokenResponse {
            id: token.id.clone(),
            token: token.to_string(),
            expires_ms,
        })
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Reply<pb::JoinResponse> {
        let answer = self
            .service
            .membership
            .admit(request.into_inner())
            .await
            .map_err(into_status)?;
        ok(answer)
    }

    async fn invite(&self, request: Request<pb::InviteRequest>) -> Reply<pb::InviteResponse> {
        let request = request.into_inner();
        let node_id = self
            .service
            .membership
            .accept_invitation(&request.token, &request.join)
            .await
            .map_err(into_status)?;
        ok(pb::InviteResponse { node_id })
    }

    async fn remove_node(&self, request: Request<pb::RemoveNodeRequest>) -> Reply<pb::RemoveNodeResponse> {
        self.service
            .membership
            .remove_node(request.get_ref().node_id)
            .await
            .map_err(into_status)?;
        ok(pb::RemoveNodeResponse {})
    }

    async fn set_region_quota(&self, request: Request<pb::SetRegionQuotaRequest>) -> Reply<pb::SetRegionQuotaResponse> {
        let request = request.into_inner();
        self.service
            .membership
            .set_region_quota(&request.region, request.concurrency)
            .await
            .map_err(into_status)?;
        ok(pb::SetRegionQuotaResponse {})
    }
}

fn into_event_invoke_config(config: model::EventInvokeConfig) -> pb::EventInvokeConfig {
    pb::EventInvokeConfig {
        function: config.function,
        qualifier: config.qualifier,
        max_retry_attempts: config.max_retry_attempts,
        max_event_age_s: config.max_event_age_s,
        on_success: config.on_success.unwrap_or_default(),
        on_failure: config.on_failure.unwrap_or_default(),
        last_modified_ms: config.last_modified_ms,
    }
}
