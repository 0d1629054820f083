//! Starting servers on ephemeral ports and talking to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tenancy_authz::memory::MemoryPolicyStore;
use tenancy_core::identity::Identity;
use tenancy_core::memory::MemoryStore;
use tenancy_servers::AdminAuth;
use tenancy_servers::proto::identity::v1 as pb;
use tenancy_servers::proto::identity::v1::identity_service_client::IdentityServiceClient;
use tenancy_servers::proto::policy::v1::policy_service_client::PolicyServiceClient;
use tenancy_servers::serve::policy_engine;
use tenancy_servers::status::error_detail;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The admin token of servers started by [`TestServer::start`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The identity gRPC service name.
pub const IDENTITY_SERVICE: &str = "tenancy.identity.v1.IdentityService";

/// The policy gRPC service name.
pub const POLICY_SERVICE: &str = "tenancy.policy.v1.PolicyService";

/// Adds `authorization: Bearer <token>` to every call (or nothing).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.map(|t| format!("Bearer {t}").parse().unwrap()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An identity client that sends a bearer token.
pub type Client = IdentityServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of the identity service at `channel`, sending `token`.
pub fn identity_client(channel: Channel, token: Option<&str>) -> Client {
    IdentityServiceClient::with_interceptor(channel, Bearer::new(token))
}

/// A policy client that sends a bearer token.
pub type PolicyClient = PolicyServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of the policy service at `channel`, sending `token`.
pub fn policy_client(channel: Channel, token: Option<&str>) -> PolicyClient {
    PolicyServiceClient::with_interceptor(channel, Bearer::new(token))
}

/// Connects to a gRPC server at `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// The health status of `service` at `channel` ("" = the whole server).
pub async fn health(channel: Channel, service: &str) -> Result<ServingStatus, Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Sends one reflection request to the server at `channel` and returns its answer.
pub async fn reflect(channel: Channel, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel);
    let outbound = tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut inbound = client
        .server_reflection_info(outbound)
        .await
        .unwrap()
        .into_inner();
    inbound
        .message()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
}

/// In-process identity and policy servers sharing one memory identity store (the
/// policy service loads principals from it), each on an ephemeral port. Dropping it
/// shuts the servers down.
pub struct TestServer {
    /// Connected to the identity server.
    pub channel: Channel,
    /// Connected to the policy server.
    pub policy_channel: Channel,
    stop: Option<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<Result<(), tenancy_servers::Error>>>,
}

impl TestServer {
    /// A server requiring [`ADMIN_TOKEN`].
    pub async fn start() -> Self {
        Self::start_with(AdminAuth::new(ADMIN_TOKEN).unwrap()).await
    }

    /// Servers with the given authentication.
    pub async fn start_with(auth: AdminAuth) -> Self {
        let identity_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let identity_addr = identity_listener.local_addr().unwrap();
        let policy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let policy_addr = policy_listener.local_addr().unwrap();
        let identity = Identity::new(Arc::new(MemoryStore::new()));
        let authz = Arc::new(policy_engine(Arc::new(MemoryPolicyStore::new()), &identity));
        let (stop, stopped) = watch::channel(false);
        let shutdown = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }
        };
        let tasks = vec![
            tokio::spawn(tenancy_servers::run_identity(
                identity_listener,
                identity,
                auth.clone(),
                shutdown(),
            )),
            tokio::spawn(tenancy_servers::run_policy(
                policy_listener,
                authz,
                auth,
                shutdown(),
            )),
        ];
        Self {
            channel: connect(identity_addr).await.unwrap(),
            policy_channel: connect(policy_addr).await.unwrap(),
            stop: Some(stop),
            tasks,
        }
    }

    /// A client sending the right admin token.
    pub fn client(&self) -> Client {
        identity_client(self.channel.clone(), Some(ADMIN_TOKEN))
    }

    /// A client sending `token` (or none).
    pub fn client_with_token(&self, token: Option<&str>) -> Client {
        identity_client(self.channel.clone(), token)
    }

    /// A policy client sending the right admin token.
    pub fn policy(&self) -> PolicyClient {
        policy_client(self.policy_channel.clone(), Some(ADMIN_TOKEN))
    }

    /// A policy client sending `token` (or none).
    pub fn policy_with_token(&self, token: Option<&str>) -> PolicyClient {
        policy_client(self.policy_channel.clone(), token)
    }

    /// Shuts the servers down and checks that they stopped cleanly.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        for task in std::mem::take(&mut self.tasks) {
            let result = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop within 10 s")
                .unwrap();
            result.unwrap();
        }
    }
}

/// Asserts `status` is `INVALID_ARGUMENT` naming `field` in its message and its
/// error detail.
#[track_caller]
pub fn assert_invalid(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "message does not name `{field}`: {}",
        status.message()
    );
    let detail = error_detail(status).expect("no error detail");
    assert_eq!(detail.kind, "invalid_input");
    assert_eq!(detail.field, field);
}

/// Asserts `status` has `code` and an error detail of `kind`.
#[track_caller]
pub fn assert_code(status: &Status, code: Code, kind: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let detail = error_detail(status).expect("no error detail");
    assert_eq!(detail.kind, kind);
    assert_eq!(detail.field, "");
}

/// Creates a tenant with `slug` and returns it.
pub async fn create_tenant(client: &mut Client, slug: &str) -> pb::Tenant {
    client
        .create_tenant(pb::CreateTenantRequest {
            slug: slug.to_owned(),
            display_name: format!("Tenant {slug}"),
            metadata_json: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tenant
        .unwrap()
}

/// Creates a user with `email` and returns it.
pub async fn create_user(client: &mut Client, email: &str) -> pb::User {
    client
        .create_user(pb::CreateUserRequest {
            email: email.to_owned(),
            display_name: "Some One".to_owned(),
            attributes_json: String::new(),
            password: None,
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}
