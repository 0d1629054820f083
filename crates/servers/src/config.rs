//! The command line of `tenancy` and the settings it resolves.
//!
//! Every setting comes, in order of precedence, from a command-line flag, an
//! environment variable, the TOML file named by `--config` / `TENANCY_CONFIG` (same
//! keys as the flags, in snake_case), or its default:
//!
//! | flag | env | file key | default |
//! |---|---|---|---|
//! | `--database-url` | `TENANCY_DATABASE_URL` | `database_url` | `sqlite://./data/tenancy.db` |
//! | `--identity-addr` | `TENANCY_IDENTITY_ADDR` | `identity_addr` | `127.0.0.1:50051` |
//! | `--policy-addr` | `TENANCY_POLICY_ADDR` | `policy_addr` | `127.0.0.1:50052` |
//! | `--gateway-addr` | `TENANCY_GATEWAY_ADDR` | `gateway_addr` | `127.0.0.1:3000` |
//! | `--usage-addr` | `TENANCY_USAGE_ADDR` | `usage_addr` | `127.0.0.1:8080` |
//! | `--billing-addr` | `TENANCY_BILLING_ADDR` | `billing_addr` | `127.0.0.1:3001` |
//! | `--billing-interval` | `TENANCY_BILLING_INTERVAL` | `billing_interval` | `60s` |
//! | `--stripe-api-key` | `TENANCY_STRIPE_API_KEY` | `stripe_api_key` | none: payments collected by hand |
//! | `--stripe-api-base` | `TENANCY_STRIPE_API_BASE` | `stripe_api_base` | `https://api.stripe.com` |
//! | `--stripe-webhook-secret` | `TENANCY_STRIPE_WEBHOOK_SECRET` | `stripe_webhook_secret` | none |
//! | `--kafka-brokers` | `TENANCY_KAFKA_BROKERS` | `kafka_brokers` | none: no Kafka consumer |
//! | `--kafka-group` | `TENANCY_KAFKA_GROUP` | `kafka_group` | `tenancy-usage` |
//! | `--issuer` | `TENANCY_ISSUER` | `issuer` | `http://<gateway-addr>` |
//! | `--master-key` | `TENANCY_MASTER_KEY` | `master_key` | none: required by the gateway |
//! | `--redis-url` | `TENANCY_REDIS_URL` | `redis_url` | none: sessions in the database, rate limits in memory |
//! | `--admin-token` | `TENANCY_ADMIN_TOKEN` | `admin_token` | none: required by `serve` |
//! | `--insecure-dev` | `TENANCY_INSECURE_DEV` | `insecure_dev` | `false` |
//! | `--webhooks-allow-private` | `TENANCY_WEBHOOKS_ALLOW_PRIVATE` | `webhooks_allow_private` | `false`: tenants' webhook endpoints must be public addresses |
//! | `--log-format` | `TENANCY_LOG_FORMAT` | `log_format` | `text` |
//!
//! Clap resolves flag over environment; [`Settings::resolve`] falls back to the file and
//! then to the default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The database used when none is configured: a SQLite file under `./data`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/tenancy.db";
/// Where the identity gRPC service listens unless configured otherwise.
pub const DEFAULT_IDENTITY_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);
/// Where the policy gRPC service listens unless configured otherwise.
pub const DEFAULT_POLICY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50052);
/// Where the auth gateway (HTTP) listens unless configured otherwise.
pub const DEFAULT_GATEWAY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3000);

/// Where the usage service (HTTP) listens unless configured otherwise.
pub const DEFAULT_USAGE_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// Where the billing service (HTTP) listens unless configured otherwise.
pub const DEFAULT_BILLING_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3001);

/// How often the billing scheduler closes the billing periods that have ended, unless
/// configured otherwise.
pub const DEFAULT_BILLING_INTERVAL: TimeSpan = TimeSpan(Duration::from_secs(60));

/// Stripe's API, where payments go when a Stripe key is set and no other base is.
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// The consumer group the usage service consumes `usage.events` as unless configured
/// otherwise.
pub const DEFAULT_KAFKA_GROUP: &str = "tenancy-usage";

/// `tenancy`: the tenancy reference servers.
#[derive(Debug, Parser)]
#[command(name = "tenancy", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub options: Options,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The settings as given on the command line or in the environment; unset ones fall
/// back to the config file, then to their defaults (see [`Settings::resolve`]).
#[derive(Debug, Clone, Default, Args)]
pub struct Options {
    /// TOML file with the same settings as the flags (snake_case keys); flags and
    /// environment variables override it
    #[arg(long, env = "TENANCY_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Database: `sqlite:PATH` (created if absent), `postgres://...` or `memory:`
    /// (nothing persists) [default: sqlite://./data/tenancy.db]
    #[arg(long, env = "TENANCY_DATABASE_URL", value_name = "URL", global = true)]
    pub database_url: Option<String>,

    /// Address of the identity gRPC service [default: 127.0.0.1:50051]
    #[arg(
        long,
        env = "TENANCY_IDENTITY_ADDR",
        value_name = "IP:PORT",
        global = true
    )]
    pub identity_addr: Option<SocketAddr>,

    /// Address of the policy gRPC service [default: 127.0.0.1:50052]
    #[arg(
        long,
        env = "TENANCY_POLICY_ADDR",
        value_name = "IP:PORT",
        global = true
    )]
    pub policy_addr: Option<SocketAddr>,

    /// Address of the auth gateway (HTTP) [default: 127.0.0.1:3000]
    #[arg(
        long,
        env = "TENANCY_GATEWAY_ADDR",
        value_name = "IP:PORT",
        global = true
    )]
    pub gateway_addr: Option<SocketAddr>,

    /// Address of the usage service (HTTP) [default: 127.0.0.1:8080]
    #[arg(
        long,
        env = "TENANCY_USAGE_ADDR",
        value_name = "IP:PORT",
        global = true
    )]
    pub usage_addr: Option<SocketAddr>,

    /// Address of the billing service (HTTP) [default: 127.0.0.1:3001]
    #[arg(
        long,
        env = "TENANCY_BILLING_ADDR",
        value_name = "IP:PORT",
        global = true
    )]
    pub billing_addr: Option<SocketAddr>,

    /// How often the billing scheduler closes ended billing periods and invoices them
    /// (`500ms`, `30s`, `5m`, `1h`; a bare number is seconds) [default: 60s]
    #[arg(
        long,
        env = "TENANCY_BILLING_INTERVAL",
        value_name = "DURATION",
        global = true
    )]
    pub billing_interval: Option<TimeSpan>,

    /// Stripe secret key (`sk_...` or `rk_...`): Stripe becomes the payment provider;
    /// without it payments are collected by hand and invoices marked paid by an
    /// operator; prefer the environment or the config file
    #[arg(
        long,
        env = "TENANCY_STRIPE_API_KEY",
        value_name = "KEY",
        hide_env_values = true,
        global = true
    )]
    pub stripe_api_key: Option<String>,

    /// Base URL of Stripe's API (a stub in tests) [default: `https://api.stripe.com`]
    #[arg(
        long,
        env = "TENANCY_STRIPE_API_BASE",
        value_name = "URL",
        global = true
    )]
    pub stripe_api_base: Option<String>,

    /// Signing secret (`whsec_...`) of the Stripe webhook endpoint that reports
    /// payments to the billing service; prefer the environment or the config file
    #[arg(
        long,
        env = "TENANCY_STRIPE_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true,
        global = true
    )]
    pub stripe_webhook_secret: Option<String>,

    /// Kafka bootstrap brokers (`host:port,...`): the usage service consumes
    /// `usage.events` from them; without it there is no Kafka consumer
    #[arg(
        long,
        env = "TENANCY_KAFKA_BROKERS",
        value_name = "HOSTS",
        global = true
    )]
    pub kafka_brokers: Option<String>,

    /// Consumer group of the usage service's Kafka consumer: processes of one group
    /// share the partitions of `usage.events` [default: tenancy-usage]
    #[arg(long, env = "TENANCY_KAFKA_GROUP", value_name = "GROUP", global = true)]
    pub kafka_group: Option<String>,

    /// The OAuth issuer URL the gateway is reached at [default: http://GATEWAY_ADDR]
    #[arg(long, env = "TENANCY_ISSUER", value_name = "URL", global = true)]
    pub issuer: Option<String>,

    /// Base64 of 32 random bytes sealing the signing keys at rest and keying client
    /// secrets, CSRF and flow state; prefer the environment or the config file
    #[arg(
        long,
        env = "TENANCY_MASTER_KEY",
        value_name = "BASE64",
        hide_env_values = true,
        global = true
    )]
    pub master_key: Option<String>,

    /// Redis for login sessions and rate limits (production); without it sessions live
    /// in the database and rate limits in process memory
    #[arg(long, env = "TENANCY_REDIS_URL", value_name = "URL", global = true)]
    pub redis_url: Option<String>,

    /// Token that administrative gRPC calls present as `authorization: Bearer <token>`;
    /// prefer the environment variable or the config file (flags show in `ps`)
    #[arg(
        long,
        env = "TENANCY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,

    /// Development only: serve without an admin token and accept every call,
    /// authenticated or not
    #[arg(
        long,
        env = "TENANCY_INSECURE_DEV",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        global = true
    )]
    pub insecure_dev: Option<bool>,

    /// Let tenants' webhook endpoints point to loopback and private addresses (tests
    /// and development only: in production it lets tenants reach the internal
    /// network)
    #[arg(
        long,
        env = "TENANCY_WEBHOOKS_ALLOW_PRIVATE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = BoolishValueParser::new(),
        global = true
    )]
    pub webhooks_allow_private: Option<bool>,

    /// Log format; the level is set with `RUST_LOG` (default `info`) [default: text]
    #[arg(long, env = "TENANCY_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
}

/// The commands of `tenancy`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run services until SIGTERM or Ctrl-C (migrations are applied at start-up)
    Serve(ServeArgs),
    /// Apply the database migrations and exit
    Migrate(MigrateArgs),
    /// Manage the gateway's signing keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the effective settings as TOML (admin token redacted) and exit
    ShowConfig,
}

/// Arguments of `tenancy serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Services to run; all of them when none is named
    #[arg(value_enum, value_name = "SERVICE")]
    pub services: Vec<ServiceName>,
}

/// `tenancy keys ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum KeysCommand {
    /// Retire the signing key now: the already-published next key signs from now on
    /// and a new next key is published
    Rotate,
    /// Print the published key set (JWKS)
    List,
}

/// Arguments of `tenancy migrate`.
#[derive(Debug, Clone, Default, Args)]
pub struct MigrateArgs {
    /// PostgreSQL only: grant this (non-owner) application role the rights it needs
    /// on the tables
    #[arg(long, value_name = "ROLE")]
    pub grant_to: Option<String>,
}

/// A service `tenancy serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum ServiceName {
    /// The identity gRPC API (`tenancy.identity.v1.IdentityService`)
    Identity,
    /// The policy gRPC API (`tenancy.policy.v1.PolicyService`)
    Policy,
    /// The auth gateway: OAuth2 / OpenID Connect provider over HTTP
    Gateway,
    /// The usage service: metering over HTTP, and the Kafka consumer of `usage.events`
    Usage,
    /// The billing service: plans, subscriptions and invoices over HTTP, and the
    /// scheduler that invoices ended billing periods
    Billing,
}

impl ServiceName {
    /// Every service, in start-up order.
    pub const ALL: &'static [Self] = &[
        Self::Identity,
        Self::Policy,
        Self::Gateway,
        Self::Usage,
        Self::Billing,
    ];

    /// The name of the service, as `tenancy serve` takes it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Policy => "policy",
            Self::Gateway => "gateway",
            Self::Usage => "usage",
            Self::Billing => "billing",
        }
    }

    /// The services to run for the names given: all of them when none is given,
    /// otherwise the given ones without duplicates.
    #[must_use]
    pub fn selected(names: &[Self]) -> Vec<Self> {
        if names.is_empty() {
            return Self::ALL.to_vec();
        }
        let mut names = names.to_vec();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// How logs are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The contents of a config file: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Settings::database_url`].
    pub database_url: Option<String>,
    /// See [`Settings::identity_addr`].
    pub identity_addr: Option<SocketAddr>,
    /// See [`Settings::policy_addr`].
    pub policy_addr: Option<SocketAddr>,
    /// See [`Settings::gateway_addr`].
    pub gateway_addr: Option<SocketAddr>,
    /// See [`Settings::usage_addr`].
    pub usage_addr: Option<SocketAddr>,
    /// See [`Settings::billing_addr`].
    pub billing_addr: Option<SocketAddr>,
    /// See [`Settings::billing_interval`].
    pub billing_interval: Option<TimeSpan>,
    /// See [`Settings::stripe_api_key`].
    pub stripe_api_key: Option<String>,
    /// See [`Settings::stripe_api_base`].
    pub stripe_api_base: Option<String>,
    /// See [`Settings::stripe_webhook_secret`].
    pub stripe_webhook_secret: Option<String>,
    /// See [`Settings::kafka_brokers`].
    pub kafka_brokers: Option<String>,
    /// See [`Settings::kafka_group`].
    pub kafka_group: Option<String>,
    /// See [`Settings::issuer`].
    pub issuer: Option<String>,
    /// See [`Settings::master_key`].
    pub master_key: Option<String>,
    /// See [`Settings::redis_url`].
    pub redis_url: Option<String>,
    /// See [`Settings::admin_token`].
    pub admin_token: Option<String>,
    /// See [`Settings::insecure_dev`].
    pub insecure_dev: Option<bool>,
    /// See [`Settings::webhooks_allow_private`].
    pub webhooks_allow_private: Option<bool>,
    /// See [`Settings::log_format`].
    pub log_format: Option<LogFormat>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a config file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|source| Error::ConfigParse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

/// The effective settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where data lives.
    pub database_url: String,
    /// Where the identity gRPC service listens.
    pub identity_addr: SocketAddr,
    /// Where the policy gRPC service listens.
    pub policy_addr: SocketAddr,
    /// Where the auth gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where the usage service listens.
    pub usage_addr: SocketAddr,
    /// Where the billing service listens.
    pub billing_addr: SocketAddr,
    /// How often the billing scheduler runs.
    pub billing_interval: TimeSpan,
    /// The Stripe secret key: Stripe is the payment provider when set.
    pub stripe_api_key: Option<String>,
    /// Stripe's API base URL.
    pub stripe_api_base: String,
    /// The signing secret of Stripe's webhooks.
    pub stripe_webhook_secret: Option<String>,
    /// The Kafka brokers the usage service consumes `usage.events` from.
    pub kafka_brokers: Option<String>,
    /// The consumer group of the usage service.
    pub kafka_group: String,
    /// The OAuth issuer URL.
    pub issuer: String,
    /// The master key (base64 of 32 bytes).
    pub master_key: Option<String>,
    /// Redis for sessions and rate limits.
    pub redis_url: Option<String>,
    /// The admin token of the administrative APIs.
    pub admin_token: Option<String>,
    /// Whether to run without authentication (development only).
    pub insecure_dev: bool,
    /// Whether tenants' webhook endpoints may be loopback or private addresses (tests
    /// and development only).
    pub webhooks_allow_private: bool,
    /// How logs are written.
    pub log_format: LogFormat,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &self.database_url)
            .field("identity_addr", &self.identity_addr)
            .field("policy_addr", &self.policy_addr)
            .field("gateway_addr", &self.gateway_addr)
            .field("usage_addr", &self.usage_addr)
            .field("billing_addr", &self.billing_addr)
            .field("billing_interval", &self.billing_interval)
            .field(
                "stripe_api_key",
                &self.stripe_api_key.as_ref().map(|_| "<redacted>"),
            )
            .field("stripe_api_base", &self.stripe_api_base)
            .field(
                "stripe_webhook_secret",
                &self.stripe_webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("kafka_brokers", &self.kafka_brokers)
            .field("kafka_group", &self.kafka_group)
            .field("issuer", &self.issuer)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field("redis_url", &self.redis_url)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("insecure_dev", &self.insecure_dev)
            .field("webhooks_allow_private", &self.webhooks_allow_private)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Settings {
    /// The effective settings: `options` (flags, then environment), else the config
    /// file they name (if any), else the defaults.
    pub fn resolve(options: &Options) -> Result<Self, Error> {
        let file = match &options.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Ok(Self::merge(options, file))
    }

    /// Merges already-read layers: `options` over `file` over the defaults.
    #[must_use]
    pub fn merge(options: &Options, file: FileConfig) -> Self {
        let gateway_addr = options
            .gateway_addr
            .or(file.gateway_addr)
            .unwrap_or(DEFAULT_GATEWAY_ADDR);
        Self {
            database_url: options
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            identity_addr: options
                .identity_addr
                .or(file.identity_addr)
                .unwrap_or(DEFAULT_IDENTITY_ADDR),
            policy_addr: options
                .policy_addr
                .or(file.policy_addr)
                .unwrap_or(DEFAULT_POLICY_ADDR),
            gateway_addr,
            usage_addr: options
                .usage_addr
                .or(file.usage_addr)
                .unwrap_or(DEFAULT_USAGE_ADDR),
            billing_addr: options
                .billing_addr
                .or(file.billing_addr)
                .unwrap_or(DEFAULT_BILLING_ADDR),
            billing_interval: options
                .billing_interval
                .or(file.billing_interval)
                .unwrap_or(DEFAULT_BILLING_INTERVAL),
            stripe_api_key: options.stripe_api_key.clone().or(file.stripe_api_key),
            stripe_api_base: options
                .stripe_api_base
                .clone()
                .or(file.stripe_api_base)
                .unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.to_owned()),
            stripe_webhook_secret: options
                .stripe_webhook_secret
                .clone()
                .or(file.stripe_webhook_secret),
            kafka_brokers: options.kafka_brokers.clone().or(file.kafka_brokers),
            kafka_group: options
                .kafka_group
                .clone()
                .or(file.kafka_group)
                .unwrap_or_else(|| DEFAULT_KAFKA_GROUP.to_owned()),
            issuer: options
                .issuer
                .clone()
                .or(file.issuer)
                .unwrap_or_else(|| format!("http://{gateway_addr}")),
            master_key: options.master_key.clone().or(file.master_key),
            redis_url: options.redis_url.clone().or(file.redis_url),
            admin_token: options.admin_token.clone().or(file.admin_token),
            insecure_dev: options.insecure_dev.or(file.insecure_dev).unwrap_or(false),
            webhooks_allow_private: options
                .webhooks_allow_private
                .or(file.webhooks_allow_private)
                .unwrap_or(false),
            log_format: options.log_format.or(file.log_format).unwrap_or_default(),
        }
    }

    /// The settings as a config file, with the admin token redacted.
    pub fn to_redacted_toml(&self) -> Result<String, Error> {
        let file = FileConfig {
            database_url: Some(self.database_url.clone()),
            identity_addr: Some(self.identity_addr),
            policy_addr: Some(self.policy_addr),
            gateway_addr: Some(self.gateway_addr),
            usage_addr: Some(self.usage_addr),
            billing_addr: Some(self.billing_addr),
            billing_interval: Some(self.billing_interval),
            stripe_api_key: redacted(self.stripe_api_key.as_ref()),
            stripe_api_base: Some(self.stripe_api_base.clone()),
            stripe_webhook_secret: redacted(self.stripe_webhook_secret.as_ref()),
            kafka_brokers: self.kafka_brokers.clone(),
            kafka_group: Some(self.kafka_group.clone()),
            issuer: Some(self.issuer.clone()),
            master_key: self.master_key.as_ref().map(|_| "<redacted>".to_owned()),
            redis_url: self.redis_url.clone(),
            admin_token: self.admin_token.as_ref().map(|_| "<redacted>".to_owned()),
            insecure_dev: Some(self.insecure_dev),
            webhooks_allow_private: Some(self.webhooks_allow_private),
            log_format: Some(self.log_format),
        };
        toml::to_string(&file).map_err(|e| Error::Config(format!("cannot print the settings: {e}")))
    }
}

/// `<redacted>` in place of a secret that is set.
fn redacted(secret: Option<&String>) -> Option<String> {
    secret.map(|_| "<redacted>".to_owned())
}

/// A positive span of time, written `500ms`, `30s`, `5m` or `1h` (a bare number is
/// seconds), as flags, environment variables and config files take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeSpan(pub Duration);

impl TimeSpan {
    /// The span as a [`Duration`].
    #[must_use]
    pub const fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for TimeSpan {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let invalid = || format!("`{text}` is not a duration such as `500ms`, `30s`, `5m` or `1h`");
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let duration = match unit.trim() {
            "ms" => Duration::from_millis(number),
            "" | "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3_600)),
            _ => return Err(invalid()),
        };
        if duration.is_zero() {
            return Err(format!("`{text}` must be longer than zero"));
        }
        Ok(Self(duration))
    }
}

impl std::fmt::Display for TimeSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

impl Serialize for TimeSpan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeSpan {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tenancy").chain(args.iter().copied())).unwrap()
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(Path::new("tenancy.toml"), text).unwrap()
    }

    const FULL_FILE: &str = r#"
        database_url = "postgres://db/tenancy"
        identity_addr = "0.0.0.0:6000"
        policy_addr = "0.0.0.0:6001"
        admin_token = "from-file"
        insecure_dev = true
        log_format = "json"
    "#;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cli = parse(&["serve"]);
        let settings = Settings::merge(&cli.options, FileConfig::default());
        assert_eq!(settings.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(settings.identity_addr, DEFAULT_IDENTITY_ADDR);
        assert_eq!(settings.identity_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.policy_addr, DEFAULT_POLICY_ADDR);
        assert_eq!(settings.policy_addr.to_string(), "127.0.0.1:50052");
        assert_eq!(settings.admin_token, None);
        assert!(!settings.insecure_dev);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.gateway_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(settings.issuer, "http://127.0.0.1:3000");
        assert_eq!(settings.master_key, None);
        assert_eq!(settings.redis_url, None);
        assert_eq!(settings.usage_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.kafka_brokers, None);
        assert_eq!(settings.kafka_group, "tenancy-usage");
        assert_eq!(settings.billing_addr.to_string(), "127.0.0.1:3001");
        assert_eq!(
            settings.billing_interval.duration(),
            Duration::from_secs(60)
        );
        assert_eq!(settings.stripe_api_key, None);
        assert_eq!(settings.stripe_api_base, "https://api.stripe.com");
        assert_eq!(settings.stripe_webhook_secret, None);
    }

    #[test]
    fn billing_settings_parse_and_stripe_secrets_are_redacted() {
        let cli = parse(&[
            "serve",
            "billing",
            "--billing-addr",
            "127.0.0.1:4001",
            "--billing-interval",
            "1s",
            "--stripe-api-key",
            "sk_test_secret",
        ]);
        let settings = Settings::merge(
            &cli.options,
            file("billing_interval = \"5m\"\nstripe_webhook_secret = \"whsec_secret\""),
        );
        assert_eq!(settings.billing_addr.to_string(), "127.0.0.1:4001");
        assert_eq!(settings.billing_interval.duration(), Duration::from_secs(1));
        assert_eq!(settings.stripe_api_key.as_deref(), Some("sk_test_secret"));
        assert_eq!(
            settings.stripe_webhook_secret.as_deref(),
            Some("whsec_secret")
        );
        let text = settings.to_redacted_toml().unwrap();
        let debug = format!("{settings:?}");
        for secret in ["sk_test_secret", "whsec_secret"] {
            assert!(!text.contains(secret), "{text}");
            assert!(!debug.contains(secret), "{debug}");
        }
        assert_eq!(
            file(&text).billing_interval,
            Some(settings.billing_interval)
        );

        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3_600)),
        ] {
            assert_eq!(text.parse::<TimeSpan>().unwrap().duration(), expected);
        }
        for bad in ["", "0s", "1d", "-1s", "s", "1.5s"] {
            let err = bad.parse::<TimeSpan>().unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        assert!(Cli::try_parse_from(["tenancy", "serve", "--billing-interval", "soon"]).is_err());
        assert!(FileConfig::parse(Path::new("t.toml"), "billing_interval = \"0\"").is_err());
    }

    #[test]
    fn the_issuer_follows_the_gateway_address_unless_set() {
        let cli = parse(&["serve", "--gateway-addr", "127.0.0.1:4000"]);
        let settings = Settings::merge(&cli.options, FileConfig::default());
        assert_eq!(settings.issuer, "http://127.0.0.1:4000");
        let cli = parse(&["serve", "--issuer", "https://auth.example"]);
        let settings = Settings::merge(&cli.options, file("master_key = \"secret-key\""));
        assert_eq!(settings.issuer, "https://auth.example");
        let text = settings.to_redacted_toml().unwrap();
        assert!(!text.contains("secret-key"), "{text}");
        assert!(!format!("{settings:?}").contains("secret-key"));
    }

    #[test]
    fn file_overrides_defaults() {
        let cli = parse(&["serve"]);
        let settings = Settings::merge(&cli.options, file(FULL_FILE));
        assert_eq!(settings.database_url, "postgres://db/tenancy");
        assert_eq!(settings.identity_addr.to_string(), "0.0.0.0:6000");
        assert_eq!(settings.policy_addr.to_string(), "0.0.0.0:6001");
        assert_eq!(settings.admin_token.as_deref(), Some("from-file"));
        assert!(settings.insecure_dev);
        assert_eq!(settings.log_format, LogFormat::Json);
    }

    #[test]
    fn flags_override_the_file() {
        let cli = parse(&[
            "serve",
            "--database-url",
            "memory:",
            "--identity-addr",
            "127.0.0.1:7000",
            "--policy-addr",
            "127.0.0.1:7001",
            "--admin-token",
            "from-flag",
            "--insecure-dev=false",
            "--log-format",
            "text",
        ]);
        let settings = Settings::merge(&cli.options, file(FULL_FILE));
        assert_eq!(settings.database_url, "memory:");
        assert_eq!(settings.identity_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(settings.policy_addr.to_string(), "127.0.0.1:7001");
        assert_eq!(settings.admin_token.as_deref(), Some("from-flag"));
        assert!(!settings.insecure_dev);
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn a_partial_file_mixes_with_flags_and_defaults() {
        let cli = parse(&["--admin-token", "t", "migrate"]);
        let settings = Settings::merge(&cli.options, file(r#"database_url = "memory:""#));
        assert_eq!(settings.database_url, "memory:");
        assert_eq!(settings.identity_addr, DEFAULT_IDENTITY_ADDR);
        assert_eq!(settings.policy_addr, DEFAULT_POLICY_ADDR);
        assert_eq!(settings.admin_token.as_deref(), Some("t"));
    }

    #[test]
    fn bare_insecure_dev_flag_means_true() {
        let cli = parse(&["serve", "--insecure-dev"]);
        assert_eq!(cli.options.insecure_dev, Some(true));
        let cli = parse(&["serve", "--insecure-dev=no"]);
        assert_eq!(cli.options.insecure_dev, Some(false));
    }

    #[test]
    fn config_files_refuse_unknown_keys_and_bad_values() {
        let path = Path::new("tenancy.toml");
        let err = FileConfig::parse(path, "databse_url = \"x\"").unwrap_err();
        assert!(err.to_string().contains("`tenancy.toml`"), "{err}");
        assert!(FileConfig::parse(path, "identity_addr = \"nowhere\"").is_err());
        assert!(FileConfig::parse(path, "log_format = \"xml\"").is_err());
    }

    #[test]
    fn services_default_to_all_and_deduplicate() {
        let Command::Serve(args) = parse(&["serve"]).command else {
            panic!("not serve");
        };
        assert_eq!(ServiceName::selected(&args.services), ServiceName::ALL);
        assert_eq!(
            ServiceName::ALL,
            [
                ServiceName::Identity,
                ServiceName::Policy,
                ServiceName::Gateway,
                ServiceName::Usage,
                ServiceName::Billing
            ]
        );
        let Command::Serve(args) = parse(&["serve", "identity", "identity"]).command else {
            panic!("not serve");
        };
        assert_eq!(
            ServiceName::selected(&args.services),
            [ServiceName::Identity]
        );
        let Command::Serve(args) = parse(&["serve", "policy"]).command else {
            panic!("not serve");
        };
        assert_eq!(ServiceName::selected(&args.services), [ServiceName::Policy]);
        assert!(Cli::try_parse_from(["tenancy", "serve", "billingz"]).is_err());
        for service in ServiceName::ALL {
            let value = service.to_possible_value().unwrap();
            assert_eq!(value.get_name(), service.as_str());
        }
    }

    #[test]
    fn migrate_takes_a_role_and_show_config_redacts_the_token() {
        let cli = parse(&["migrate", "--grant-to", "tenancy_app"]);
        let Command::Migrate(args) = cli.command else {
            panic!("not migrate");
        };
        assert_eq!(args.grant_to.as_deref(), Some("tenancy_app"));

        let settings = Settings::merge(&parse(&["show-config"]).options, file(FULL_FILE));
        let text = settings.to_redacted_toml().unwrap();
        assert!(!text.contains("from-file"), "{text}");
        assert!(!format!("{settings:?}").contains("from-file"));
        let back = file(&text);
        assert_eq!(back.identity_addr, Some(settings.identity_addr));
        assert_eq!(back.policy_addr, Some(settings.policy_addr));
        assert_eq!(back.admin_token.as_deref(), Some("<redacted>"));
    }

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
