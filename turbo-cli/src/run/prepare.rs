//! Before the first request: every check on the command line, the input,
//! an output to resume and the keys, then the engine. Nothing is written
//! before every check has passed.

use super::*;

/// What a run starts from once every check has passed.
pub(super) struct Prepared {
    pub(super) startup: Instant,
    pub(super) output: PathBuf,
    pub(super) console: Arc<Console>,
    pub(super) mode: ProgressMode,
    pub(super) is_mock: bool,
    pub(super) limits: LimitPlan,
    pub(super) batch: Batch,
    pub(super) existing: Existing,
    pub(super) ledger: Ledger,
    pub(super) answers: HashMap<u32, String>,
    pub(super) entries: usize,
    pub(super) todo: u64,
    pub(super) already_done: u64,
    pub(super) writer: ResultWriter,
    pub(super) engine: TurboRun,
}

/// Checks everything and builds the engine; `Err(outcome)` ends the run
/// before anything is sent (bad input, or nothing to run).
pub(super) async fn prepare(args: &RunArgs) -> anyhow::Result<Result<Prepared, Outcome>> {
    let startup = Instant::now();
    if let Some(path) = &args.log_file {
        turbo_core::logging::init_file_logging(path)
            .with_context(|| format!("cannot log to {}", path.display()))?;
    }
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output_path(&args.input));
    if same_file(&args.input, &output) {
        return Err(UsageError(format!(
            "the output {} is the input file; choose another with -o",
            output.display()
        ))
        .into());
    }
    if output.is_dir() {
        return Err(UsageError(format!(
            "the output {} is a directory; name a file with -o",
            output.display()
        ))
        .into());
    }
    // Lines are read again when they are sent, so the input must be a file.
    if let Ok(meta) = std::fs::metadata(&args.input)
        && !meta.is_file()
    {
        return Err(UsageError(format!(
            "{} is not a regular file (the input is read twice: save it to a file first)",
            args.input.display()
        ))
        .into());
    }
    let (_, registry, limits) = LimitPlan::load(&args.limits).map_err(UsageError::from)?;
    if !(0.0..=1.0).contains(&args.mock_error_rate) {
        return Err(UsageError("--mock-error-rate must be between 0 and 1".to_owned()).into());
    }
    let console = Arc::new(Console::new());
    let mode = progress::resolve(args.progress);
    let is_mock = args.limits.provider == ProviderArg::Mock;
    if is_mock && args.base_url.is_some() {
        console.warn("--base-url is ignored with --provider mock");
    }
    let default_provider = args.limits.provider.default_provider();

    let mut encodings = [false; 2];
    let loaded = input::load(&args.input, &registry, default_provider, |_, entry| {
        encodings[encoding_slot(encoding_for_model(entry.request.model()))] = true;
    });
    let batch = match loaded {
        Ok(batch) => batch,
        Err(error) => {
            error.report(&args.input);
            return Ok(Err(Outcome::BadInput));
        }
    };
    let entries = batch.len();
    if entries == 0 {
        eprintln!(
            "turbo-run: {} holds no request lines: nothing to run",
            args.input.display()
        );
        return Ok(Err(Outcome::Success));
    }

    let resume = args.resume || args.retry_failed;
    let mut existing = if resume {
        match resume::scan(&output, &batch.ids, args.retry_failed) {
            Ok(existing) => existing,
            Err(ScanError::Invalid(problems)) => {
                report_problems(&output, &problems);
                return Ok(Err(Outcome::BadInput));
            }
            Err(ScanError::Io(error)) => {
                return Err(anyhow!(error).context(format!("cannot resume {}", output.display())));
            }
        }
    } else {
        let has_results = std::fs::metadata(&output).is_ok_and(|meta| meta.len() > 0);
        if has_results && !args.overwrite {
            return Err(UsageError(format!(
                "{} already holds results: continue it with --resume (add --retry-failed to rerun failures), \
                 or replace it with --overwrite",
                output.display()
            ))
            .into());
        }
        Existing::empty(entries)
    };
    if resume {
        describe_resume(&console, &output, &existing);
    }

    let mut ledger = Ledger {
        state: existing
            .prior
            .iter()
            .map(|prior| match prior {
                Prior::Missing => state::TODO,
                Prior::Completed => state::COMPLETED,
                Prior::Failed => state::FAILED,
                Prior::Skipped => state::SKIPPED,
            })
            .collect(),
        node_of: vec![None; entries],
        line_of: HashMap::default(),
        failed_nodes: HashMap::default(),
        pending_dependents: vec![0; entries],
        root_of: existing.skipped_root.clone(),
    };
    let mut needed: BTreeMap<Provider, usize> = BTreeMap::new();
    let mut answers_needed = vec![false; entries];
    for index in 0..entries as u32 {
        if ledger.state[index as usize] != state::TODO {
            continue;
        }
        *needed
            .entry(batch.lines[index as usize].provider)
            .or_default() += 1;
        for &dep in batch.deps.of(index) {
            ledger.pending_dependents[dep as usize] += 1;
            if ledger.state[dep as usize] == state::COMPLETED {
                answers_needed[dep as usize] = true;
            }
        }
    }
    let todo = needed.values().sum::<usize>() as u64;
    let already_done = (entries as u64) - todo;
    let answers = resume::load_answers(&output, &batch.ids, &answers_needed)
        .with_context(|| format!("cannot read answers from {}", output.display()))?;
    drop(answers_needed);

    let source = if is_mock {
        ClientSource::Mock {
            latency: Duration::from_millis(args.mock_latency_ms),
            error_rate: args.mock_error_rate,
        }
    } else {
        let mut base_urls = BTreeMap::new();
        if let Some(url) = &args.base_url {
            base_urls.insert(default_provider, url.clone());
        }
        if let Some(url) = &args.openai_base_url {
            base_urls.insert(Provider::OpenAi, url.clone());
        }
        if let Some(url) = &args.groq_base_url {
            base_urls.insert(Provider::Groq, url.clone());
        }
        ClientSource::Http {
            default_provider,
            base_urls,
            timeouts: (args.timeout, args.idle_timeout),
        }
    };
    let learned: BTreeSet<Provider> = needed
        .keys()
        .copied()
        .filter(|&provider| limits.lane(provider) == LaneLimits::Learned)
        .collect();
    let clients = match clients::build(&source, &registry, &needed, &learned, console.clone()) {
        Ok(clients) => clients,
        Err(error @ ClientError::MissingKey { .. }) => {
            eprintln!("turbo-run: {error}");
            return Ok(Err(Outcome::BadInput));
        }
        // The command line's mistake, shown with its cause's text.
        Err(error @ ClientError::Config { .. }) => {
            return Err(UsageError(error.to_string()).into());
        }
    };

    if todo > 0 {
        warm_up(encodings);
    }
    // Every check passed: only now is the output changed.
    if args.overwrite {
        std::fs::File::create(&output)
            .map_err(|error| UsageError(format!("cannot write {}: {error}", output.display())))?;
    }
    existing
        .apply(&output, &batch.ids)
        .with_context(|| format!("cannot prepare {} for resuming", output.display()))?;
    let writer = ResultWriter::open(&output, existing.needs_newline)
        .map_err(|error| UsageError(format!("cannot write {}: {error}", output.display())))?;

    let shared_budget = match &args.redis_url {
        Some(url) => Some(
            turbo_ratelimit::RedisBackend::builder(url)
                .prefix(args.redis_prefix.clone())
                .connect()
                .await
                .map_err(|error| {
                    UsageError(format!(
                        "cannot use the shared budget in Redis ({error}); \
                         check --redis-url / TURBO_REDIS_URL"
                    ))
                })?,
        ),
        None => None,
    };
    let engine = build_engine(EngineOptions {
        clients,
        limits: &limits,
        workers: args.workers.0,
        max_retries: args.max_retries,
        // A provider's own timeout may be longer than --timeout: its client
        // enforces it, the engine's bound must not cut it short.
        attempt_timeout: needed
            .keys()
            .filter_map(|&provider| registry.get(provider).and_then(|spec| spec.timeout))
            .fold(args.timeout, Duration::max),
        rate_limit_deadline: args.rate_limit_deadline,
        shared_budget,
    })?;
    Ok(Ok(Prepared {
        startup,
        output,
        console,
        mode,
        is_mock,
        limits,
        batch,
        existing,
        ledger,
        answers,
        entries,
        todo,
        already_done,
        writer,
        engine,
    }))
}
