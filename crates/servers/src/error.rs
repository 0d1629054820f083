//! The error of the servers crate: what can stop a server from starting or running.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a server could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is incomplete or contradictory.
    #[error("{0}")]
    Config(String),
    /// The configuration file could not be read.
    #[error("cannot read config file `{}`: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file `{}`: {source}", path.display())]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// The database URL names no supported backend.
    #[error(
        "unsupported database url `{0}`: expected `sqlite:...`, `postgres://...`, `postgresql://...` or `memory:`"
    )]
    UnsupportedDatabase(String),
    /// A listening socket could not be opened.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed (connecting, migrating).
    #[error(transparent)]
    Store(#[from] tenancy_core::Error),
    /// The gRPC transport failed.
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not read the file descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Http(String),
    /// A service task ended abnormally.
    #[error("service task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
