//! Starting services: [`run_identity`] and [`run_policy`] run the identity and policy
//! gRPC servers on a bound listener; [`serve`] starts every service a [`Settings`] asks
//! for, in one process, until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tenancy_authz::{Authz, IdentityEntities, PolicyStore};
use tenancy_billing::webhooks::{DispatcherConfig, WebhookConfig};
use tenancy_billing::{
    Billing, ManualProvider, MeteringUsage, PaymentProvider, StripeProvider, WebhookDispatcher,
    Webhooks,
};
use tenancy_core::clock::SystemClock;
use tenancy_core::events::kafka::{KafkaBus, KafkaConfig};
use tenancy_core::events::{EventBus, InProcessBus, Relay};
use tenancy_core::identity::Identity;
use tenancy_core::oauth::{Provider, ProviderConfig, ProviderParts};
use tenancy_core::token::{KeyManager, MasterKey, RotationPolicy};
use tenancy_metering::{
    ConsumerConfig, Metering, RedisQuotaCounter, TenantDirectory, UsageConsumer,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::billing::{BillingState, run_billing, run_scheduler};
use crate::config::{ServiceName, Settings};
use crate::gateway::{GatewayState, run_gateway};
use crate::identity::{IdentityGrpc, SERVICE_NAME as IDENTITY_SERVICE_NAME};
use crate::policy::{PolicyGrpc, SERVICE_NAME as POLICY_SERVICE_NAME};
use crate::proto::identity::v1::identity_service_server::IdentityServiceServer;
use crate::usage::{UsageState, run_usage};
use crate::{AdminAuth, Error, proto, store};

/// Serves the identity gRPC API on `listener` until `shutdown` completes, then stops
/// accepting calls and waits for the calls in flight.
///
/// Besides `tenancy.identity.v1.IdentityService` (guarded by `auth`), the server
/// answers `grpc.health.v1.Health` (the identity service reports `SERVING` until
/// shutdown starts) and gRPC server reflection (`grpc.reflection.v1` and `v1alpha`),
/// both without authentication.
pub async fn run_identity(
    listener: TcpListener,
    identity: Identity,
    auth: AdminAuth,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(IDENTITY_SERVICE_NAME, ServingStatus::Serving)
        .await;

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let identity_service =
        IdentityServiceServer::with_interceptor(IdentityGrpc::new(identity), auth);

    let shutdown = async move {
        shutdown.await;
        tracing::info!("identity service shutting down");
        health
            .set_service_status(IDENTITY_SERVICE_NAME, ServingStatus::NotServing)
            .await;
    };

    Server::builder()
        .trace_fn(|request| tracing::info_span!("grpc", method = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(identity_service)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Serves the policy gRPC API on `listener` until `shutdown` completes, then stops
/// accepting calls and waits for the calls in flight.
///
/// Besides `tenancy.policy.v1.PolicyService` (guarded by `auth`, requests limited to
/// [`crate::policy::MAX_REQUEST_BYTES`]), the server answers `grpc.health.v1.Health`
/// (the policy service reports `SERVING` until shutdown starts) and gRPC server
/// reflection, both without authentication.
pub async fn run_policy(
    listener: TcpListener,
    authz: Arc<Authz>,
    auth: AdminAuth,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(POLICY_SERVICE_NAME, ServingStatus::Serving)
        .await;

    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let policy_service = PolicyGrpc::new(authz).into_server(auth);

    let shutdown = async move {
        shutdown.await;
        tracing::info!("policy service shutting down");
        health
            .set_service_status(POLICY_SERVICE_NAME, ServingStatus::NotServing)
            .await;
    };

    Server::builder()
        .trace_fn(|request| tracing::info_span!("grpc", method = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(policy_service)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// The policy engine of a deployment: decisions over `store`, with `User::"<user id>"`
/// principals and their roles loaded from `identity` (the identity store of the same
/// database).
#[must_use]
pub fn policy_engine(store: Arc<dyn PolicyStore>, identity: &Identity) -> Authz {
    Authz::new(store).with_entity_provider(Arc::new(IdentityEntities::new(identity.clone())))
}

/// The connections `listener` accepts, with `TCP_NODELAY` set: a reply goes out at
/// once instead of waiting for the client's acknowledgement (Nagle's algorithm).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Reflection over the tenancy protos and the health protocol.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The admin authentication `settings` ask for: the admin token, or no authentication
/// at all with `insecure_dev` (logged as a warning). Without either it is a
/// configuration error: the server refuses to start.
pub fn admin_auth(settings: &Settings) -> Result<AdminAuth, Error> {
    match (&settings.admin_token, settings.insecure_dev) {
        (_, true) => {
            tracing::warn!(
                "INSECURE DEVELOPMENT MODE: administrative APIs accept every call without \
                 authentication; never use --insecure-dev outside a developer machine"
            );
            Ok(AdminAuth::insecure_dev())
        }
        (Some(token), false) => {
            if token.chars().count() < 16 {
                tracing::warn!(
                    "the admin token is shorter than 16 characters; use a long random one"
                );
            }
            AdminAuth::new(token)
        }
        (None, false) => Err(Error::Config(
            "an admin token is required: set `--admin-token`, `TENANCY_ADMIN_TOKEN` or \
             `admin_token` in the config file (or `--insecure-dev` for local development)"
                .into(),
        )),
    }
}

/// The well-known master key of insecure development mode (`--insecure-dev` without
/// `--master-key`): anyone can unseal what it sealed, so never use it for real data.
const DEV_MASTER_KEY: &str = "ZGV2ZWxvcG1lbnQtb25seS1pbnNlY3VyZS1tYXN0ZXI=";

/// The master key `settings` give; without one the gateway refuses to start, unless
/// `insecure_dev` (then a well-known development key is used, with a warning).
pub fn master_key(settings: &Settings) -> Result<MasterKey, Error> {
    match (&settings.master_key, settings.insecure_dev) {
        (Some(key), _) => Ok(MasterKey::from_base64(key)?),
        (None, true) => {
            tracing::warn!(
                "INSECURE DEVELOPMENT MODE: signing keys are sealed with a well-known \
                 development master key; set `--master-key` for real data"
            );
            Ok(MasterKey::from_base64(DEV_MASTER_KEY)?)
        }
        (None, false) => Err(Error::Config(
            "a master key is required by the gateway: set `--master-key`, \
             `TENANCY_MASTER_KEY` or `master_key` (base64 of 32 random bytes, e.g. \
             `openssl rand -base64 32`), or `--insecure-dev` for local development"
                .into(),
        )),
    }
}

/// The signing keys of the deployment `settings` describe, loaded (and created or
/// rotated as due).
pub async fn key_manager(settings: &Settings) -> Result<Arc<KeyManager>, Error> {
    let stores = store::open_stores(&settings.database_url).await?;
    load_keys(&stores, master_key(settings)?).await
}

/// The signing keys in `stores`, sealed under `master`, refreshed once (a first key is
/// created, rotations due are applied).
async fn load_keys(stores: &store::Stores, master: MasterKey) -> Result<Arc<KeyManager>, Error> {
    let keys = Arc::new(KeyManager::new(
        stores.keys.clone(),
        master,
        RotationPolicy::default(),
        Arc::new(SystemClock),
    )?);
    keys.refresh().await?;
    Ok(keys)
}

/// The gateway of a deployment: the provider over `stores` (sessions and rate limits
/// in Redis when `settings.redis_url` is set), with its signing keys loaded.
pub async fn gateway_state(
    settings: &Settings,
    stores: &store::Stores,
    identity: &Identity,
    admin: AdminAuth,
) -> Result<GatewayState, Error> {
    let master = master_key(settings)?;
    let keys = load_keys(stores, master.clone()).await?;
    let (sessions, limiter) =
        store::session_backends(stores, settings.redis_url.as_deref()).await?;
    let provider = Provider::new(ProviderParts {
        config: ProviderConfig::new(settings.issuer.clone()),
        identity: identity.clone(),
        store: stores.oauth.clone(),
        sessions,
        keys,
        limiter,
        master_key: master,
        clock: None,
    })?;
    Ok(GatewayState {
        provider: Arc::new(provider),
        admin,
        secure_cookies: !settings.insecure_dev,
    })
}

/// The metering service of a deployment: over the metering store of `stores`, with
/// unknown (or deleted) tenants' events rejected through `identity`, and quota
/// counters in Redis when `settings.redis_url` is set (shared by every usage process).
pub async fn metering(
    settings: &Settings,
    stores: &store::Stores,
    identity: &Identity,
) -> Result<Metering, Error> {
    let mut metering = Metering::new(stores.metering.clone())
        .with_tenants(Arc::new(identity.clone()) as Arc<dyn TenantDirectory>);
    if let Some(url) = &settings.redis_url {
        metering = metering
            .with_quota_counter(Arc::new(RedisQuotaCounter::connect(url, "tenancy").await?));
    }
    Ok(metering)
}

/// The payment provider `settings` ask for: Stripe when a Stripe API key is set (at
/// `settings.stripe_api_base`), else [`ManualProvider`] (an operator marks invoices
/// paid).
pub fn payment_provider(settings: &Settings) -> Result<Arc<dyn PaymentProvider>, Error> {
    match &settings.stripe_api_key {
        Some(key) => {
            let stripe = StripeProvider::new(key.clone(), &settings.stripe_api_base)
                .map_err(|e| Error::Config(format!("invalid Stripe settings: {e}")))?;
            Ok(Arc::new(stripe))
        }
        None => Ok(Arc::new(ManualProvider::new())),
    }
}

/// The billing service of a deployment: the engine over the billing store of
/// `stores`, pricing usage from `metering` (the usage service's, same database),
/// tenants checked against `identity`, and the payment provider of `settings`.
pub fn billing_state(
    settings: &Settings,
    stores: &store::Stores,
    identity: &Identity,
    metering: &Metering,
    admin: AdminAuth,
) -> Result<BillingState, Error> {
    let usage = Arc::new(MeteringUsage::new(Arc::new(metering.clone())));
    let payments = payment_provider(settings)?;
    let webhooks = Webhooks::new(stores.webhooks.clone()).with_config(WebhookConfig {
        allow_private_destinations: settings.webhooks_allow_private,
        ..WebhookConfig::default()
    });
    Ok(BillingState {
        billing: Arc::new(Billing::new(stores.billing.clone(), usage).with_payments(payments)),
        admin,
        tenants: Arc::new(identity.clone()),
        stripe_webhook_secret: settings.stripe_webhook_secret.as_deref().map(Arc::from),
        webhooks: Arc::new(webhooks),
    })
}

/// The Kafka consumer of `usage.events` into `metering`, when `settings.kafka_brokers`
/// names brokers (as group `settings.kafka_group`); `None` without Kafka. Connecting
/// creates the standard topics if absent.
pub async fn usage_consumer(
    settings: &Settings,
    metering: &Metering,
) -> Result<Option<UsageConsumer>, Error> {
    let Some(brokers) = &settings.kafka_brokers else {
        return Ok(None);
    };
    let bus: Arc<dyn EventBus> =
        Arc::new(KafkaBus::connect(KafkaConfig::new(brokers.clone())).await?);
    let config = ConsumerConfig {
        group: settings.kafka_group.clone(),
        ..ConsumerConfig::default()
    };
    Ok(Some(
        UsageConsumer::new(metering.clone(), bus).with_config(config),
    ))
}

/// Runs `services` (all of them when empty) as configured by `settings` until
/// `shutdown` completes or one of them fails; then stops the others gracefully.
///
/// Refuses to start without an admin token unless `insecure_dev` is set. Opens the
/// database and applies its migrations first, and binds every listener before serving,
/// so a taken port or a bad URL fails before anything is served. The services share
/// the database: the policy service loads principals from the identity store, billing
/// prices the usage service's meters. With billing, its scheduler runs too (every
/// `settings.billing_interval`).
pub async fn serve(
    settings: &Settings,
    services: &[ServiceName],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let services = ServiceName::selected(services);
    let auth = admin_auth(settings)?;
    let stores = store::open_stores(&settings.database_url).await?;
    let identity = Identity::new(stores.identity.clone());
    let authz = if services.contains(&ServiceName::Policy) {
        Some(Arc::new(policy_engine(stores.policies.clone(), &identity)))
    } else {
        None
    };

    let gateway = if services.contains(&ServiceName::Gateway) {
        Some(gateway_state(settings, &stores, &identity, auth.clone()).await?)
    } else {
        None
    };

    // The usage and billing services share one metering service: billing prices the
    // usage it aggregates.
    let metering =
        if services.contains(&ServiceName::Usage) || services.contains(&ServiceName::Billing) {
            Some(metering(settings, &stores, &identity).await?)
        } else {
            None
        };

    let (usage, consumer) = match &metering {
        Some(metering) if services.contains(&ServiceName::Usage) => {
            let consumer = usage_consumer(settings, metering).await?;
            let state = UsageState {
                metering: metering.clone(),
                admin: auth.clone(),
            };
            (Some(state), consumer)
        }
        _ => (None, None),
    };

    let billing = match &metering {
        Some(metering) if services.contains(&ServiceName::Billing) => Some(billing_state(
            settings,
            &stores,
            &identity,
            metering,
            auth.clone(),
        )?),
        _ => None,
    };

    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut listeners = Vec::with_capacity(services.len());
    for service in &services {
        let addr = match service {
            ServiceName::Identity => settings.identity_addr,
            ServiceName::Policy => settings.policy_addr,
            ServiceName::Gateway => settings.gateway_addr,
            ServiceName::Usage => settings.usage_addr,
            ServiceName::Billing => settings.billing_addr,
        };
        listeners.push((*service, bind(addr).await?));
    }
    for (service, listener) in listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(service = service.as_str(), %addr, "listening");
        }
        let shutdown = wait_for_stop(stopped.clone());
        match service {
            ServiceName::Identity => {
                tasks.spawn(run_identity(
                    listener,
                    identity.clone(),
                    auth.clone(),
                    shutdown,
                ));
            }
            ServiceName::Policy => {
                if let Some(authz) = &authz {
                    tasks.spawn(run_policy(listener, authz.clone(), auth.clone(), shutdown));
                }
            }
            ServiceName::Gateway => {
                if let Some(gateway) = &gateway {
                    tasks.spawn(run_gateway(listener, gateway.clone(), shutdown));
                }
            }
            ServiceName::Usage => {
                if let Some(usage) = &usage {
                    tasks.spawn(run_usage(listener, usage.clone(), shutdown));
                }
            }
            ServiceName::Billing => {
                if let Some(billing) = &billing {
                    tasks.spawn(run_billing(listener, billing.clone(), shutdown));
                }
            }
        }
    }

    if let Some(billing) = &billing {
        let shutdown = wait_for_stop(stopped.clone());
        tasks.spawn(run_scheduler(
            billing.billing.clone(),
            settings.billing_interval.duration(),
            shutdown,
        ));
        // Billing's events leave the outbox for the bus (Kafka when configured, else
        // in process), where the webhook dispatcher delivers them to the tenants'
        // endpoints.
        let bus: Arc<dyn EventBus> = match &settings.kafka_brokers {
            Some(brokers) => Arc::new(KafkaBus::connect(KafkaConfig::new(brokers.clone())).await?),
            None => Arc::new(InProcessBus::new()),
        };
        let relay = Relay::new(stores.outbox.clone(), bus.clone());
        let shutdown = wait_for_stop(stopped.clone());
        tasks.spawn(async move {
            relay.run(RELAY_IDLE, shutdown).await;
            Ok(())
        });
        let dispatcher = WebhookDispatcher::new(
            billing.webhooks.as_ref().clone(),
            bus,
            DispatcherConfig::default(),
        )?;
        let shutdown = wait_for_stop(stopped.clone());
        tasks.spawn(async move { dispatcher.run(shutdown).await.map_err(Error::from) });
    }

    if let Some(consumer) = consumer {
        let shutdown = wait_for_stop(stopped.clone());
        tasks.spawn(async move { consumer.run(shutdown).await.map_err(Error::from) });
    }

    let mut first_error = None;
    tokio::select! {
        () = shutdown => tracing::info!("shutdown requested"),
        Some(result) = tasks.join_next() => {
            first_error = flatten(result).err();
            tracing::error!("a service stopped unexpectedly; stopping the others");
        }
    }
    // Receivers may all be gone already; that is fine.
    let _ = stop.send(true);
    while let Some(result) = tasks.join_next().await {
        if let Err(err) = flatten(result) {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// How long the outbox relay waits when the outbox is empty.
const RELAY_IDLE: std::time::Duration = std::time::Duration::from_millis(200);

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

async fn wait_for_stop(mut stopped: watch::Receiver<bool>) {
    // An error means the sender is gone: stop too.
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn flatten(result: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    result?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{FileConfig, Options};

    fn settings(options: Options) -> Settings {
        Settings::merge(&options, FileConfig::default())
    }

    #[test]
    fn refuses_to_start_without_a_token_unless_insecure_dev() {
        let err = admin_auth(&settings(Options::default())).unwrap_err();
        assert!(err.to_string().contains("admin token is required"), "{err}");
        let auth = admin_auth(&settings(Options {
            insecure_dev: Some(true),
            ..Options::default()
        }))
        .unwrap();
        assert!(auth.is_insecure());
        let auth = admin_auth(&settings(Options {
            admin_token: Some("t".into()),
            ..Options::default()
        }))
        .unwrap();
        assert!(!auth.is_insecure());
    }
}
