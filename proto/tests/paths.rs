//! The generated gRPC servers answer exactly on the official method paths
//! (`/apache.rocketmq.v2.MessagingService/<Method>`), and the generated client reaches
//! them. Client and server are joined in process, without a network.

use std::str::FromStr;

use prost::bytes::Bytes;
use raftmq_proto::rocketmq::v2 as pb;
use raftmq_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use raftmq_proto::rocketmq::v2::messaging_service_server::{self, MessagingService, MessagingServiceServer};
use tonic::codegen::BoxStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code as GrpcCode, Request, Response, Status, Streaming};

/// Every method of the official `MessagingService`, in its order.
const OFFICIAL_METHODS: [&str; 17] = [
    "QueryRoute",
    "Heartbeat",
    "SendMessage",
    "QueryAssignment",
    "ReceiveMessage",
    "AckMessage",
    "ForwardMessageToDeadLetterQueue",
    "PullMessage",
    "UpdateOffset",
    "GetOffset",
    "QueryOffset",
    "EndTransaction",
    "Telemetry",
    "NotifyClientTermination",
    "ChangeInvisibleDuration",
    "RecallMessage",
    "SyncLiteSubscription",
];

/// Answers every call with an error naming the method it reached, except SendMessage,
/// which echoes the message ids and bodies it received.
#[derive(Debug)]
struct Probe;

fn reached(method: &str) -> Status {
    Status::failed_precondition(format!("reached {method}"))
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MessagingService for Probe {
    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;
    type PullMessageStream = BoxStream<pb::PullMessageResponse>;
    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn query_route(&self, _: Request<pb::QueryRouteRequest>) -> Answer<pb::QueryRouteResponse> {
        Err(reached("QueryRoute"))
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Answer<pb::HeartbeatResponse> {
        Err(reached("Heartbeat"))
    }
    async fn send_message(&self, request: Request<pb::SendMessageRequest>) -> Answer<pb::SendMessageResponse> {
        if request.get_ref().messages.is_empty() {
            return Err(reached("SendMessage"));
        }
        let entries = request
            .into_inner()
            .messages
            .into_iter()
            .map(|message| pb::SendResultEntry {
                status: Some(pb::Status {
                    code: pb::Code::Ok.into(),
                    message: String::from_utf8_lossy(&message.body).into(),
                }),
                message_id: message.system_properties.map(|p| p.message_id).unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::SendMessageResponse { status: None, entries }))
    }
    async fn query_assignment(&self, _: Request<pb::QueryAssignmentRequest>) -> Answer<pb::QueryAssignmentResponse> {
        Err(reached("QueryAssignment"))
    }
    async fn receive_message(&self, _: Request<pb::ReceiveMessageRequest>) -> Answer<Self::ReceiveMessageStream> {
        Err(reached("ReceiveMessage"))
    }
    async fn ack_message(&self, _: Request<pb::AckMessageRequest>) -> Answer<pb::AckMessageResponse> {
        Err(reached("AckMessage"))
    }
    async fn forward_message_to_dead_letter_queue(
        &self,
        _: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Answer<pb::ForwardMessageToDeadLetterQueueResponse> {
        Err(reached("ForwardMessageToDeadLetterQueue"))
    }
    async fn pull_message(&self, _: Request<pb::PullMessageRequest>) -> Answer<Self::PullMessageStream> {
        Err(reached("PullMessage"))
    }
    async fn update_offset(&self, _: Request<pb::UpdateOffsetRequest>) -> Answer<pb::UpdateOffsetResponse> {
        Err(reached("UpdateOffset"))
    }
    async fn get_offset(&self, _: Request<pb::GetOffsetRequest>) -> Answer<pb::GetOffsetResponse> {
        Err(reached("GetOffset"))
    }
    async fn query_offset(&self, _: Request<pb::QueryOffsetRequest>) -> Answer<pb::QueryOffsetResponse> {
        Err(reached("QueryOffset"))
    }
    async fn end_transaction(&self, _: Request<pb::EndTransactionRequest>) -> Answer<pb::EndTransactionResponse> {
        Err(reached("EndTransaction"))
    }
    async fn telemetry(&self, _: Request<Streaming<pb::TelemetryCommand>>) -> Answer<Self::TelemetryStream> {
        Err(reached("Telemetry"))
    }
    async fn notify_client_termination(
        &self,
        _: Request<pb::NotifyClientTerminationRequest>,
    ) -> Answer<pb::NotifyClientTerminationResponse> {
        Err(reached("NotifyClientTermination"))
    }
    async fn change_invisible_duration(
        &self,
        _: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Answer<pb::ChangeInvisibleDurationResponse> {
        Err(reached("ChangeInvisibleDuration"))
    }
    async fn recall_message(&self, _: Request<pb::RecallMessageRequest>) -> Answer<pb::RecallMessageResponse> {
        Err(reached("RecallMessage"))
    }
    async fn sync_lite_subscription(
        &self,
        _: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Answer<pb::SyncLiteSubscriptionResponse> {
        Err(reached("SyncLiteSubscription"))
    }
}

/// Sends an empty message to `path` on a `Probe` server, as any gRPC client would.
async fn call_path(path: &str) -> Status {
    let mut grpc = tonic::client::Grpc::new(MessagingServiceServer::new(Probe));
    grpc.ready().await.expect("an in-process server is always ready");
    let path = PathAndQuery::from_str(path).expect("a valid path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(Request::new(()), path, codec).await {
        Ok(_) => panic!("the probe answers every empty call with an error"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn server_routes_every_official_method_path() {
    assert_eq!(messaging_service_server::SERVICE_NAME, "apache.rocketmq.v2.MessagingService");
    for method in OFFICIAL_METHODS {
        let status = call_path(&format!("/apache.rocketmq.v2.MessagingService/{method}")).await;
        assert_eq!(
            (status.code(), status.message()),
            (GrpcCode::FailedPrecondition, format!("reached {method}").as_str())
        );
    }
}

#[tokio::test]
async fn server_refuses_paths_that_are_not_official() {
    for path in [
        "/apache.rocketmq.v2.MessagingService/sendMessage",
        "/apache.rocketmq.v2.MessagingService/Send",
        "/apache.rocketmq.v1.MessagingService/SendMessage",
        "/raftmq.MessagingService/SendMessage",
    ] {
        assert_eq!(call_path(path).await.code(), GrpcCode::Unimplemented, "{path}");
    }
}

#[tokio::test]
async fn generated_client_reaches_the_server() {
    let mut client = MessagingServiceClient::new(MessagingServiceServer::new(Probe));
    let message = pb::Message {
        topic: Some(pb::Resource { resource_namespace: String::new(), name: "orders".into() }),
        system_properties: Some(pb::SystemProperties { message_id: "m-1".into(), ..Default::default() }),
        body: Bytes::from_static(b"payload"),
        ..Default::default()
    };
    let response = client
        .send_message(pb::SendMessageRequest { messages: vec![message] })
        .await
        .expect("probe answers")
        .into_inner();
    assert_eq!(response.entries.len(), 1);
    assert_eq!(response.entries[0].message_id, "m-1");
    assert_eq!(response.entries[0].status.as_ref().map(|s| s.message.as_str()), Some("payload"));
}

#[test]
fn raftmq_service_names() {
    use raftmq_proto::{admin, namesrv, raft};
    assert_eq!(raft::v1::raft_service_server::SERVICE_NAME, "raftmq.raft.v1.RaftService");
    assert_eq!(namesrv::v1::name_service_server::SERVICE_NAME, "raftmq.namesrv.v1.NameService");
    assert_eq!(admin::v1::admin_service_server::SERVICE_NAME, "raftmq.admin.v1.AdminService");
}
