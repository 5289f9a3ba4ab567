//! The feeder: walks the lines in dependency order, reads each again just
//! before it is sent, and pushes it to the engine through a bounded window;
//! a line whose dependency already failed is written as skipped.

use super::*;

/// The parts of a validated chat line that are sent (parsed straight into
/// the typed request: chat lines are the bulk of most batches).
#[derive(serde::Deserialize)]
struct Runnable {
    #[serde(default)]
    priority: Option<i32>,
    body: ChatRequest,
}

/// The parts of a validated line for another endpoint.
#[derive(serde::Deserialize)]
struct RunnableOther {
    #[serde(default)]
    priority: Option<i32>,
    body: serde_json::Value,
}

/// Reads what is sent from a validated line of `endpoint`.
fn runnable(text: &str, endpoint: Endpoint) -> Option<(Option<i32>, ApiRequest)> {
    if endpoint == Endpoint::ChatCompletions {
        let entry = serde_json::from_str::<Runnable>(text).ok()?;
        return Some((entry.priority, ApiRequest::Chat(entry.body)));
    }
    let entry = serde_json::from_str::<RunnableOther>(text).ok()?;
    let request = EndpointRequest::new(endpoint, entry.body).ok()?;
    Some((entry.priority, ApiRequest::Endpoint(request)))
}

/// What the feeder decided for one line.
enum Next {
    Done,
    Skip(u32),
    Push {
        engine_deps: Vec<NodeId>,
        from_file: Vec<u32>,
        keyed: bool,
    },
    Stop,
}

pub(super) async fn feed(
    ctx: Arc<RunContext>,
    order: Vec<u32>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut reader = LineReader::open(&ctx.batch.path)
        .with_context(|| format!("cannot read {}", ctx.batch.path.display()))?;
    for index in order {
        if *stop.borrow() {
            break;
        }
        let next = {
            let ledger = ctx.ledger.lock();
            decide(&ctx, &ledger, index)?
        };
        let (engine_deps, from_file, keyed) = match next {
            Next::Done => continue,
            Next::Stop => break,
            Next::Skip(root) => {
                ctx.skip_directly(index, root)?;
                continue;
            }
            Next::Push {
                engine_deps,
                from_file,
                keyed,
            } => (engine_deps, from_file, keyed),
        };
        let permit = tokio::select! {
            permit = ctx.window.acquire() => permit.context("the engine window closed")?,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        permit.forget();
        let meta = ctx.batch.lines[index as usize];
        let text = reader.read(&meta).with_context(|| {
            format!(
                "cannot read line {} of {}",
                meta.line,
                ctx.batch.path.display()
            )
        })?;
        // The line was validated: read just what is sent, without building
        // a JSON tree first.
        let (priority, mut request) = match runnable(text, meta.endpoint) {
            Some(entry) => entry,
            None => {
                let problems = parse_entry(text).err().unwrap_or_default();
                return Err(anyhow!(
                    "{}:{}: the input changed while running: {}",
                    ctx.batch.path.display(),
                    meta.line,
                    problems.join("; ")
                ));
            }
        };
        if !from_file.is_empty() {
            fill_placeholders(&mut request, |key| {
                from_file
                    .iter()
                    .find(|&&dep| ctx.batch.ids.name(dep) == key)
                    .and_then(|dep| ctx.answers.get(dep))
                    .map(String::as_str)
            });
        }
        let mut node = WorkNode::new(meta.provider, request)
            .with_default_retries()
            .with_priority(priority.unwrap_or(0));
        if keyed {
            node = node.with_key(ctx.batch.ids.name(index));
        }
        let node_id = node.id();
        {
            let mut ledger = ctx.ledger.lock();
            ledger.line_of.insert(node_id, index);
            ledger.node_of[index as usize] = Some(node_id);
            ledger.state[index as usize] = state::PUSHED;
        }
        match ctx.engine.push_with_dependencies(node, &engine_deps) {
            Ok(_) => {
                ctx.pushed.fetch_add(1, Ordering::Release);
            }
            Err(error) => {
                {
                    let mut ledger = ctx.ledger.lock();
                    ledger.line_of.remove(&node_id);
                    ledger.node_of[index as usize] = None;
                    ledger.state[index as usize] = state::TODO;
                }
                ctx.window.add_permits(1);
                if error == PushError::ShuttingDown {
                    break;
                }
                return Err(anyhow!(
                    "internal error: the engine refused line {}: {error}",
                    meta.line
                ));
            }
        }
    }
    Ok(())
}

fn decide(ctx: &RunContext, ledger: &Ledger, index: u32) -> anyhow::Result<Next> {
    if ledger.state[index as usize] != state::TODO {
        return Ok(Next::Done);
    }
    let mut engine_deps = Vec::new();
    let mut from_file = Vec::new();
    for &dep in ctx.batch.deps.of(index) {
        let d = dep as usize;
        match ledger.state[d] {
            state::COMPLETED => match ledger.node_of[d] {
                Some(node) => engine_deps.push(node),
                None => from_file.push(dep),
            },
            state::PUSHED => match ledger.node_of[d] {
                Some(node) => engine_deps.push(node),
                None => return Err(anyhow!("internal error: a pushed line has no node")),
            },
            state::FAILED => return Ok(Next::Skip(dep)),
            state::SKIPPED => {
                return Ok(Next::Skip(ledger.root_of.get(&dep).copied().unwrap_or(dep)));
            }
            state::CANCELLED => return Ok(Next::Stop),
            _ => {
                return Err(anyhow!(
                    "internal error: line {} comes before its dependency",
                    ctx.batch.lines[index as usize].line
                ));
            }
        }
    }
    Ok(Next::Push {
        engine_deps,
        from_file,
        keyed: ledger.pending_dependents[index as usize] > 0,
    })
}
