//! `tenancy`: the tenancy reference servers in one binary.
//!
//! ```text
//! tenancy serve [SERVICE...]     run services (all when none is named)
//! tenancy migrate [--grant-to R] apply the database migrations
//! tenancy keys rotate|list       rotate or print the gateway's signing keys
//! tenancy show-config            print the effective settings
//! ```
//!
//! See `tenancy --help` and [`tenancy_servers::config`] for the settings.

use std::process::ExitCode;

use clap::Parser as _;
use tenancy_servers::config::{Cli, Command, LogFormat, Settings};
use tenancy_servers::{Error, serve, store};
use tracing_subscriber::EnvFilter;

/// mimalloc: measurably faster than the system allocator for the many small
/// allocations of policy evaluation and gRPC framing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::resolve(&cli.options) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "tenancy failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> Result<(), Error> {
    match command {
        Command::Serve(args) => serve::serve(&settings, &args.services, shutdown_signal()).await,
        Command::Migrate(args) => {
            let backend = store::migrate(&settings.database_url, args.grant_to.as_deref()).await?;
            match backend {
                store::Backend::Memory => tracing::info!("memory store: nothing to migrate"),
                _ => tracing::info!(backend = ?backend, "migrations applied"),
            }
            Ok(())
        }
        Command::Keys(command) => {
            let keys = serve::key_manager(&settings).await?;
            if command == tenancy_servers::config::KeysCommand::Rotate {
                keys.rotate_now().await?;
                tracing::info!("signing key rotated");
            }
            let jwks = serde_json::to_string_pretty(&keys.jwks())
                .map_err(|e| Error::Config(format!("cannot print the key set: {e}")))?;
            println!("{jwks}");
            Ok(())
        }
        Command::ShowConfig => {
            print!("{}", settings.to_redacted_toml()?);
            Ok(())
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
