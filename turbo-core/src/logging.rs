//! Logging on `tracing`, the way the original did it: one `turbo_run.log` that
//! several processes append to, verbose under `TURBO_ENV=dev|testing`.
//!
//! Every engine task runs inside a `turbo_run{instance=…}` span, so each line an
//! engine writes carries its 6-character instance id.
//!
//! The file writer and `init_file_logging` need the `file-log` feature:
//! they install a process-wide subscriber, which is an application's choice,
//! not a library's.

/// Default log file name, as in the original.
pub const DEFAULT_LOG_FILE: &str = "turbo_run.log";

/// The runtime environment named by `TURBO_ENV`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurboEnv {
    /// `TURBO_ENV=dev`: verbose logs and periodic analytics.
    Dev,
    /// `TURBO_ENV=testing`: as `Dev`.
    Testing,
    /// Anything else or unset.
    Production,
}

impl TurboEnv {
    /// Reads `TURBO_ENV`.
    pub fn from_env() -> Self {
        Self::parse(std::env::var("TURBO_ENV").ok().as_deref())
    }

    /// Interprets a `TURBO_ENV` value (case-insensitive).
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::to_ascii_lowercase).as_deref() {
            Some("dev") | Some("development") => TurboEnv::Dev,
            Some("testing") | Some("test") => TurboEnv::Testing,
            _ => TurboEnv::Production,
        }
    }

    /// Whether this environment wants debug-level logs and the analytics line.
    pub fn is_verbose(self) -> bool {
        matches!(self, TurboEnv::Dev | TurboEnv::Testing)
    }
}

#[cfg(feature = "file-log")]
pub use file::{LockedFileWriter, LockedLine, LogError, default_filter, init_file_logging};

#[cfg(feature = "file-log")]
mod file {
    use std::fs::{File, OpenOptions};
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::MakeWriter;

    use super::TurboEnv;

    /// A [`MakeWriter`] that appends whole lines to a file under an advisory
    /// exclusive lock, so processes sharing the file never interleave partial lines.
    #[derive(Debug, Clone)]
    pub struct LockedFileWriter {
        file: Arc<File>,
        path: PathBuf,
    }

    impl LockedFileWriter {
        /// Opens (creating if needed) `path` for appending.
        pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
            let path = path.as_ref().to_path_buf();
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            Ok(Self {
                file: Arc::new(file),
                path,
            })
        }

        /// The file this writer appends to.
        pub fn path(&self) -> &Path {
            &self.path
        }
    }

    /// One formatted event: buffered, then written in one locked `write_all`.
    #[derive(Debug)]
    pub struct LockedLine<'a> {
        file: &'a File,
        buf: Vec<u8>,
    }

    impl Write for LockedLine<'_> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.buf.extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Drop for LockedLine<'_> {
        fn drop(&mut self) {
            if self.buf.is_empty() {
                return;
            }
            // A failure to log must never take the engine down: errors are dropped.
            if self.file.lock().is_ok() {
                let mut file = self.file;
                let _ = file.write_all(&self.buf);
                let _ = self.file.unlock();
            }
        }
    }

    impl<'a> MakeWriter<'a> for LockedFileWriter {
        type Writer = LockedLine<'a>;

        fn make_writer(&'a self) -> Self::Writer {
            LockedLine {
                file: &self.file,
                buf: Vec::with_capacity(256),
            }
        }
    }

    /// Errors from [`init_file_logging`].
    #[derive(Debug, thiserror::Error)]
    pub enum LogError {
        /// The log file could not be opened.
        #[error("cannot open log file {path}: {source}")]
        Open {
            /// The path that failed.
            path: PathBuf,
            /// The I/O error.
            source: io::Error,
        },
        /// A global subscriber is already installed.
        #[error("a global tracing subscriber is already installed")]
        AlreadyInstalled(#[source] tracing::subscriber::SetGlobalDefaultError),
    }

    /// Installs a global `tracing` subscriber that appends to `path` (use
    /// [`crate::logging::DEFAULT_LOG_FILE`] for the original's `turbo_run.log`).
    ///
    /// The level is `debug` for TurboRun's crates under `TURBO_ENV=dev|testing`,
    /// `info` otherwise; `RUST_LOG` overrides both.
    pub fn init_file_logging(path: impl AsRef<Path>) -> Result<(), LogError> {
        let path = path.as_ref();
        let writer = LockedFileWriter::open(path).map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(default_filter(TurboEnv::from_env()))
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::set_global_default(subscriber).map_err(LogError::AlreadyInstalled)
    }

    /// The filter used by [`init_file_logging`]: `RUST_LOG` if set, else a level
    /// chosen by the environment.
    pub fn default_filter(env: TurboEnv) -> EnvFilter {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            EnvFilter::new(if env.is_verbose() {
                "info,turbo_core=debug,turbo_ratelimit=debug,turbo_providers=debug"
            } else {
                "info"
            })
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn env_parsing() {
            assert_eq!(TurboEnv::parse(Some("dev")), TurboEnv::Dev);
            assert_eq!(TurboEnv::parse(Some("TESTING")), TurboEnv::Testing);
            assert_eq!(TurboEnv::parse(Some("prod")), TurboEnv::Production);
            assert_eq!(TurboEnv::parse(None), TurboEnv::Production);
            assert!(TurboEnv::Dev.is_verbose());
            assert!(!TurboEnv::Production.is_verbose());
        }

        #[test]
        fn concurrent_writers_append_whole_lines() {
            let dir = std::env::temp_dir().join(format!("turbo-log-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("lines.log");
            let _ = std::fs::remove_file(&path);
            // Two independent writers on one path stand in for two processes.
            let a = LockedFileWriter::open(&path).unwrap();
            let b = LockedFileWriter::open(&path).unwrap();
            std::thread::scope(|s| {
                for (w, tag) in [(&a, 'a'), (&b, 'b')] {
                    s.spawn(move || {
                        for i in 0..200 {
                            let mut line = w.make_writer();
                            // Written in pieces, as a formatter does.
                            write!(line, "{tag}-{i}-").unwrap();
                            writeln!(line, "{}", "x".repeat(100)).unwrap();
                        }
                    });
                }
            });
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 400);
            for line in lines {
                assert!(line.ends_with(&"x".repeat(100)), "torn line: {line}");
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
