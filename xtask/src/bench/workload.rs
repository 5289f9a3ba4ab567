//! Generated batch inputs (OpenAI Batch API lines, extended with `depends_on`).
//!
//! Prompts carry zero-padded numbers so that every request of a workload
//! costs the server exactly the same number of tokens (tiktoken splits digit
//! runs into groups of three, so `000123` and `004567` both count as two
//! tokens). The shared-key scenario relies on that to split the server's
//! totals between two clients.

use serde_json::{Value, json};

/// The model every generated request names (its encoding is o200k).
pub const MODEL: &str = "gpt-4o-mini";

/// Prompt tokens the server counts for one [`simple`] request, for sizing
/// workloads only (3 priming + 3 per message + about 9 of content); the
/// benchmark's figures always use the server's own counts.
pub const SIMPLE_PROMPT_TOKENS: u64 = 16;

/// Which field caps the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputCap {
    /// `max_tokens` (the older field).
    MaxTokens(u32),
    /// `max_completion_tokens` (the newer field, which a reference Python
    /// script ignores when budgeting).
    MaxCompletionTokens(u32),
}

impl OutputCap {
    /// The tokens it reserves.
    pub fn tokens(self) -> u32 {
        match self {
            Self::MaxTokens(tokens) | Self::MaxCompletionTokens(tokens) => tokens,
        }
    }
}

/// The body of one chat request, as a batch line carries it.
fn chat_body(content: &str, cap: OutputCap) -> Value {
    let mut body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
    });
    if let Value::Object(fields) = &mut body {
        let (name, tokens) = match cap {
            OutputCap::MaxTokens(tokens) => ("max_tokens", tokens),
            OutputCap::MaxCompletionTokens(tokens) => ("max_completion_tokens", tokens),
        };
        fields.insert(name.to_owned(), json!(tokens));
    }
    body
}

/// The request body of line `index` of [`simple`] (what a client sends for
/// it to `/v1/chat/completions`).
pub fn simple_body(index: usize, cap: OutputCap) -> String {
    chat_body(&simple_prompt(index), cap).to_string()
}

fn line(custom_id: &str, content: &str, cap: OutputCap, depends_on: &[String]) -> String {
    let body = chat_body(content, cap);
    let mut request = json!({
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    });
    if !depends_on.is_empty()
        && let Value::Object(fields) = &mut request
    {
        fields.insert("depends_on".to_owned(), json!(depends_on));
    }
    let mut text = request.to_string();
    text.push('\n');
    text
}

fn simple_prompt(index: usize) -> String {
    format!("Write one sentence about item {index:06}.")
}

/// `count` independent requests with identical cost, ids `{prefix}-000000`….
pub fn simple(prefix: &str, count: usize, cap: OutputCap) -> String {
    (0..count)
        .map(|index| {
            line(
                &format!("{prefix}-{index:06}"),
                &simple_prompt(index),
                cap,
                &[],
            )
        })
        .collect()
}

/// `chains` independent chains of `length` requests, each depending on the
/// previous one of its chain: at most `chains` requests are ever ready at
/// once, which paces a client by latency rather than by its limiter. Same
/// prompts (and so the same cost) as [`simple`].
pub fn chains(prefix: &str, chains: usize, length: usize, cap: OutputCap) -> String {
    let mut text = String::new();
    for step in 0..length {
        for chain in 0..chains {
            let index = step * chains + chain;
            let depends_on = if step == 0 {
                Vec::new()
            } else {
                vec![format!("{prefix}-{:06}", index - chains)]
            };
            text.push_str(&line(
                &format!("{prefix}-{index:06}"),
                &simple_prompt(index),
                cap,
                &depends_on,
            ));
        }
    }
    text
}

/// A map-reduce pipeline: `maps` map requests, one reduce per `group` maps
/// that quotes their answers through `{{id}}` placeholders, and one final
/// request over all reduces. Three layers deep.
pub fn map_reduce(maps: usize, group: usize, cap: OutputCap) -> MapReduce {
    let group = group.max(1);
    let mut text = String::new();
    for index in 0..maps {
        text.push_str(&line(
            &format!("map-{index:06}"),
            &format!(
                "Summarise chunk {index:06}: the quick brown fox jumps over the lazy dog while \
                 the committee reviews the quarterly figures."
            ),
            cap,
            &[],
        ));
    }
    let mut reduces = Vec::new();
    for (number, start) in (0..maps).step_by(group).enumerate() {
        let members: Vec<String> = (start..(start + group).min(maps))
            .map(|index| format!("map-{index:06}"))
            .collect();
        let quoted: Vec<String> = members.iter().map(|id| format!("- {{{{{id}}}}}")).collect();
        let id = format!("reduce-{number:05}");
        text.push_str(&line(
            &id,
            &format!("Combine these summaries into one:\n{}", quoted.join("\n")),
            cap,
            &members,
        ));
        reduces.push(id);
    }
    let quoted: Vec<String> = reduces.iter().map(|id| format!("- {{{{{id}}}}}")).collect();
    text.push_str(&line(
        "final",
        &format!("Write the final report from:\n{}", quoted.join("\n")),
        cap,
        &reduces,
    ));
    MapReduce {
        requests: maps + reduces.len() + 1,
        depth: 3,
        text,
    }
}

/// A generated pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapReduce {
    /// The JSONL input.
    pub text: String,
    /// Number of lines.
    pub requests: usize,
    /// Layers on the critical path.
    pub depth: u32,
}

/// Requests of `cost` units needed so that the run needs `budget_seconds` of
/// refill beyond the full bucket: `(limit + limit/60 · seconds) / cost`.
pub fn requests_for_budget(limit_per_min: u64, budget_seconds: f64, cost: u64) -> usize {
    let units = limit_per_min as f64 * (1.0 + budget_seconds / 60.0);
    (units / cost.max(1) as f64).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Value> {
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn simple_lines_are_batch_api_lines() {
        let lines = parse(&simple("r", 3, OutputCap::MaxTokens(100)));
        assert_eq!(lines.len(), 3);
        let first = &lines[0];
        assert_eq!(first["custom_id"], "r-000000");
        assert_eq!(first["method"], "POST");
        assert_eq!(first["url"], "/v1/chat/completions");
        assert_eq!(first["body"]["model"], MODEL);
        assert_eq!(first["body"]["max_tokens"], 100);
        assert!(first["body"].get("max_completion_tokens").is_none());
        assert!(first.get("depends_on").is_none());
        assert_eq!(
            lines[2]["body"]["messages"][0]["content"],
            "Write one sentence about item 000002."
        );
    }

    #[test]
    fn completion_cap_uses_the_newer_field() {
        let lines = parse(&simple("r", 1, OutputCap::MaxCompletionTokens(64)));
        assert_eq!(lines[0]["body"]["max_completion_tokens"], 64);
        assert!(lines[0]["body"].get("max_tokens").is_none());
        assert_eq!(OutputCap::MaxCompletionTokens(64).tokens(), 64);
    }

    #[test]
    fn prompts_have_the_same_shape() {
        // Same length and same digit grouping: identical token counts.
        let a = simple_prompt(7);
        let b = simple_prompt(123_456);
        assert_eq!(a.len(), b.len());
    }

    #[test]
    fn chains_depend_on_their_predecessor() {
        let lines = parse(&chains("b", 3, 4, OutputCap::MaxTokens(10)));
        assert_eq!(lines.len(), 12);
        let ready = lines
            .iter()
            .filter(|line| line.get("depends_on").is_none())
            .count();
        assert_eq!(ready, 3);
        assert_eq!(lines[3]["custom_id"], "b-000003");
        assert_eq!(lines[3]["depends_on"], json!(["b-000000"]));
        assert_eq!(lines[11]["depends_on"], json!(["b-000008"]));
    }

    #[test]
    fn map_reduce_quotes_its_dependencies() {
        let pipeline = map_reduce(25, 10, OutputCap::MaxTokens(60));
        let lines = parse(&pipeline.text);
        assert_eq!(pipeline.requests, 25 + 3 + 1);
        assert_eq!(lines.len(), pipeline.requests);
        assert_eq!(pipeline.depth, 3);
        let reduce = &lines[25];
        assert_eq!(reduce["custom_id"], "reduce-00000");
        assert_eq!(reduce["depends_on"].as_array().unwrap().len(), 10);
        let content = reduce["body"]["messages"][0]["content"].as_str().unwrap();
        assert!(content.contains("{{map-000000}}") && content.contains("{{map-000009}}"));
        let last_reduce = &lines[27];
        assert_eq!(last_reduce["depends_on"].as_array().unwrap().len(), 5);
        let last = lines.last().unwrap();
        assert_eq!(last["custom_id"], "final");
        assert_eq!(last["depends_on"].as_array().unwrap().len(), 3);
        // Every dependency names an earlier line.
        let mut seen = std::collections::HashSet::new();
        for line in &lines {
            for dependency in line["depends_on"].as_array().into_iter().flatten() {
                assert!(seen.contains(dependency.as_str().unwrap()));
            }
            seen.insert(line["custom_id"].as_str().unwrap().to_owned());
        }
    }

    #[test]
    fn budget_sizing_inverts_the_budget_formula() {
        // 300k TPM, 150 s beyond the first minute, 116 tokens a request.
        let count = requests_for_budget(300_000, 150.0, 116);
        assert_eq!(count, 9_052);
        let charged = count as u64 * 116;
        let seconds = crate::bench::math::Axis::per_minute(300_000, charged).budget_seconds();
        assert!((seconds - 150.0).abs() < 0.1, "{seconds}");
    }
}
