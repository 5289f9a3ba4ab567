//! The original's singleton: `NewTurboRun` / `GetTurboRun`, as a thin layer
//! over an ordinary engine.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use turbo_providers::ChatClient;

use crate::builder::BuildError;
use crate::engine::TurboRun;

static GLOBAL: OnceLock<TurboRun> = OnceLock::new();
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The global engine's runtime, started once and kept for the process.
fn own_runtime() -> Result<tokio::runtime::Handle, BuildError> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime.handle().clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("turbo-run")
        .enable_all()
        .build()
        .map_err(|error| BuildError::Runtime(Arc::new(error)))?;
    Ok(RUNTIME.get_or_init(|| runtime).handle().clone())
}
static INIT: Mutex<()> = Mutex::new(());

/// `TurboRun::global()` before any `init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TurboRun is not initialised: call TurboRun::init (or TurboRun::install_global) first")]
pub struct NotInitialized;

/// `TurboRun::install_global` when a global engine already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a global TurboRun engine is already installed")]
pub struct AlreadyInitialized;

impl TurboRun {
    /// The original's `NewTurboRun(groq, openai)`: the first call builds the
    /// global engine with the default settings and these clients; later calls
    /// return that same engine (and ignore their arguments).
    ///
    /// The global engine runs on a runtime of its own (two worker threads,
    /// started on first use), so it works from any thread and from any tokio
    /// runtime, including a different one in each `#[tokio::test]`.
    pub fn init(
        groq: Arc<dyn ChatClient>,
        openai: Arc<dyn ChatClient>,
    ) -> Result<TurboRun, BuildError> {
        if let Some(engine) = GLOBAL.get() {
            return Ok(engine.clone());
        }
        let _guard = INIT.lock();
        if let Some(engine) = GLOBAL.get() {
            return Ok(engine.clone());
        }
        let engine = TurboRun::builder()
            .groq(groq)
            .openai(openai)
            .build_on(own_runtime()?)?;
        Ok(GLOBAL.get_or_init(|| engine).clone())
    }

    /// The original's `GetTurboRun`: the global engine, or `NotInitialized`.
    pub fn global() -> Result<TurboRun, NotInitialized> {
        GLOBAL.get().cloned().ok_or(NotInitialized)
    }

    /// Installs an engine made with [`TurboRun::builder`] as the global one,
    /// once. It keeps running on the runtime it was built on (see
    /// [`crate::TurboRunBuilder::build_on`] to give it a long-lived one).
    pub fn install_global(engine: TurboRun) -> Result<(), AlreadyInitialized> {
        let _guard = INIT.lock();
        GLOBAL.set(engine).map_err(|_| AlreadyInitialized)
    }
}
