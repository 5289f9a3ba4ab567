//! Reading and validating a batch file.
//!
//! The file is read twice: once here, streaming, to validate every line and
//! keep a compact record per line (its place in the file, provider,
//! dependencies); once more while running, to build each request just before
//! it is handed to the engine. Nothing is sent unless the whole file is valid.
//!
//! `entry.rs` parses and checks one line; `ids.rs` holds the compact id table
//! and dependency lists; this file loads the whole batch and reads lines back.

mod entry;
mod ids;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use turbo_core::{Endpoint, Provider};

use crate::registry::Registry;
use turbo_graph::{BatchProblem, BuildIdHasher, DependencyGraph};

pub use entry::{Entry, parse_checked, parse_entry};
pub use ids::{Adjacency, IdTable};

use ids::topological_order;

/// At most this many problems are printed; the rest are counted.
const MAX_PRINTED_PROBLEMS: usize = 1000;

/// One problem with the input, at a 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: u32,
    /// What is wrong.
    pub message: String,
}

/// Why a batch could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io(io::Error),
    /// The file has problems, sorted by line.
    Invalid(Vec<Problem>),
}

impl LoadError {
    /// Prints the error as `INPUT:LINE: message` lines on stderr.
    pub fn report(&self, input: &Path) {
        match self {
            LoadError::Io(error) => eprintln!("{}: cannot read: {error}", input.display()),
            LoadError::Invalid(problems) => report_problems(input, problems),
        }
    }
}

/// Prints problems as `FILE:LINE: message`, at most [`MAX_PRINTED_PROBLEMS`].
pub fn report_problems(file: &Path, problems: &[Problem]) {
    for problem in problems.iter().take(MAX_PRINTED_PROBLEMS) {
        eprintln!("{}:{}: {}", file.display(), problem.line, problem.message);
    }
    if problems.len() > MAX_PRINTED_PROBLEMS {
        eprintln!(
            "{}: … and {} more problems",
            file.display(),
            problems.len() - MAX_PRINTED_PROBLEMS
        );
    }
    let noun = if problems.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    eprintln!(
        "turbo-run: {} {noun} in {}; nothing was sent",
        problems.len(),
        file.display()
    );
}

/// Where an entry's line is and what it needs, kept for every line.
#[derive(Debug, Clone, Copy)]
pub struct LineMeta {
    /// Byte offset of the line in the file.
    pub offset: u64,
    /// Length in bytes, without the line break.
    pub len: u32,
    /// 1-based line number.
    pub line: u32,
    /// The provider, with the default applied.
    pub provider: Provider,
    /// The endpoint its `url` names.
    pub endpoint: Endpoint,
}

/// A valid batch, compactly.
#[derive(Debug)]
pub struct Batch {
    /// The file.
    pub path: PathBuf,
    /// Custom ids, by entry.
    pub ids: IdTable,
    /// Per entry: where its line is, its provider.
    pub lines: Vec<LineMeta>,
    /// Per entry: its dependencies (entry indices, no repeats).
    pub deps: Adjacency,
}

impl Batch {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Entries in an order where every dependency comes before its
    /// dependents and otherwise the file's order is kept (a file already in
    /// that order comes out unchanged).
    pub fn push_order(&self) -> Vec<u32> {
        topological_order(&self.deps)
    }

    /// The dependency graph over entry indices (for the critical path).
    pub fn graph(&self) -> DependencyGraph<u32, BuildIdHasher> {
        let mut graph =
            DependencyGraph::with_capacity_and_hasher(self.len(), BuildIdHasher::default());
        let entries = (0..self.len() as u32).map(|i| (i, self.deps.of(i).iter().copied()));
        // A loaded batch has no cycles: nothing can be refused here.
        let _ = graph.add_batch(entries);
        graph
    }
}

/// Reads lines of a batch file by their recorded place, sequentially when
/// they come in file order.
pub struct LineReader {
    reader: BufReader<File>,
    position: u64,
    buffer: Vec<u8>,
}

impl LineReader {
    /// Opens the file.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            reader: BufReader::with_capacity(256 * 1024, File::open(path)?),
            position: 0,
            buffer: Vec::new(),
        })
    }

    /// The text of the line at `meta`.
    pub fn read(&mut self, meta: &LineMeta) -> io::Result<&str> {
        if meta.offset != self.position {
            // Usually a line break ahead: seek_relative keeps the buffer
            // when the target is inside it.
            match i64::try_from(meta.offset)
                .ok()
                .zip(i64::try_from(self.position).ok())
            {
                Some((target, here)) => self.reader.seek_relative(target - here)?,
                None => {
                    self.reader.seek(SeekFrom::Start(meta.offset))?;
                }
            }
        }
        self.buffer.resize(meta.len as usize, 0);
        self.reader.read_exact(&mut self.buffer)?;
        self.position = meta.offset + u64::from(meta.len);
        std::str::from_utf8(&self.buffer).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {} is not UTF-8 any more", meta.line),
            )
        })
    }
}

/// Streams `path`, checks every line (its provider must be one `registry`
/// knows and serve the line's endpoint) and the dependency graph, and
/// returns the compact batch; `on_entry` sees every valid entry once (`plan`
/// counts tokens there).
pub fn load(
    path: &Path,
    registry: &Registry,
    default_provider: Provider,
    mut on_entry: impl FnMut(u32, &Entry),
) -> Result<Batch, LoadError> {
    let file = File::open(path).map_err(LoadError::Io)?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut problems: Vec<Problem> = Vec::new();
    let mut ids = IdTable::default();
    let mut lines: Vec<LineMeta> = Vec::new();
    // Dependency names until every id is known (a line may depend on a later one).
    let mut dep_names: Vec<Box<str>> = Vec::new();
    let mut dep_ends: Vec<usize> = Vec::new();
    let mut raw = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0u32;
    loop {
        raw.clear();
        let read = reader.read_until(b'\n', &mut raw).map_err(LoadError::Io)?;
        if read == 0 {
            break;
        }
        line_no = line_no.saturating_add(1);
        let mut line_offset = offset;
        offset += read as u64;
        let mut content: &[u8] = &raw;
        while let [rest @ .., b'\n' | b'\r'] = content {
            content = rest;
        }
        // Editors on some systems start the file with a byte-order mark.
        if line_no == 1
            && let Some(rest) = content.strip_prefix(b"\xef\xbb\xbf")
        {
            content = rest;
            line_offset += 3;
        }
        let Ok(text) = std::str::from_utf8(content) else {
            problems.push(Problem {
                line: line_no,
                message: "not valid UTF-8".to_owned(),
            });
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let Ok(len) = u32::try_from(content.len()) else {
            problems.push(Problem {
                line: line_no,
                message: "line longer than 4 GiB".to_owned(),
            });
            continue;
        };
        let entry = match parse_checked(text, Some((registry, default_provider))) {
            Ok(entry) => entry,
            Err(messages) => {
                problems.extend(messages.into_iter().map(|message| Problem {
                    line: line_no,
                    message,
                }));
                continue;
            }
        };
        let provider = entry.provider.unwrap_or(default_provider);
        let index = lines.len() as u32;
        if let Some(first) = ids.push(&entry.custom_id) {
            problems.push(Problem {
                line: line_no,
                message: format!(
                    "duplicate custom_id {:?} (first used on line {})",
                    entry.custom_id, lines[first as usize].line
                ),
            });
        }
        lines.push(LineMeta {
            offset: line_offset,
            len,
            line: line_no,
            provider,
            endpoint: entry.request.endpoint(),
        });
        dep_names.extend(
            entry
                .depends_on
                .iter()
                .map(|dep| Box::<str>::from(dep.as_str())),
        );
        dep_ends.push(dep_names.len());
        on_entry(index, &entry);
    }

    let mut deps = Adjacency::with_entries(lines.len());
    let mut start = 0;
    let mut resolved = Vec::new();
    for (index, &end) in dep_ends.iter().enumerate() {
        resolved.clear();
        for name in &dep_names[start..end] {
            let line = lines[index].line;
            match ids.get(name) {
                None => problems.push(Problem {
                    line,
                    message: format!(
                        "\"depends_on\" names {name:?}, which is not a custom_id in this file"
                    ),
                }),
                Some(dep) if dep as usize == index => problems.push(Problem {
                    line,
                    message: format!("{name:?} depends on itself"),
                }),
                Some(dep) => {
                    if !resolved.contains(&dep) {
                        resolved.push(dep);
                    }
                }
            }
        }
        deps.push_list(resolved.iter().copied());
        start = end;
    }
    drop(dep_names);

    // Cycles are rare: a plain topological sort finds whether there is one,
    // and only then does the graph crate name them (it needs more memory).
    let has_cycle = topological_order(&deps).len() < lines.len();
    let mut graph: DependencyGraph<u32, BuildIdHasher> =
        DependencyGraph::with_hasher(BuildIdHasher::default());
    let entries = (0..lines.len() as u32).map(|i| (i, deps.of(i).iter().copied()));
    if has_cycle && let Err(batch_problems) = graph.add_batch(entries) {
        for problem in batch_problems {
            if let BatchProblem::Cycle { ids: cycle, .. } = &problem {
                let names: Vec<&str> = cycle.iter().map(|&i| ids.name(i)).collect();
                let line_numbers: Vec<String> = cycle
                    .iter()
                    .map(|&i| lines[i as usize].line.to_string())
                    .collect();
                let first = names.first().copied().unwrap_or("");
                problems.push(Problem {
                    line: cycle.first().map_or(0, |&i| lines[i as usize].line),
                    message: format!(
                        "dependency cycle: {} -> {first} (lines {})",
                        names.join(" -> "),
                        line_numbers.join(", ")
                    ),
                });
            } else {
                // Ids are entry indices, unique and resolved above: nothing
                // else can come back, but never hide a problem.
                let line = lines.get(problem.index()).map_or(0, |meta| meta.line);
                problems.push(Problem {
                    line,
                    message: format!("invalid dependency graph: {problem}"),
                });
            }
        }
    }

    if !problems.is_empty() {
        problems.sort_by_key(|problem| problem.line);
        return Err(LoadError::Invalid(problems));
    }
    Ok(Batch {
        path: path.to_path_buf(),
        ids,
        lines,
        deps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use std::io::Write;

    fn line(id: &str, deps: &[&str], content: &str) -> String {
        serde_json::json!({
            "custom_id": id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
            "depends_on": deps,
        })
        .to_string()
    }

    fn write_temp(name: &str, lines: &[String]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("turbo-cli-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut file = File::create(&path).unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        path
    }

    fn problems(name: &str, lines: &[String]) -> Vec<Problem> {
        match load(
            &write_temp(name, lines),
            &Registry::default(),
            Provider::OpenAi,
            |_, _| {},
        ) {
            Err(LoadError::Invalid(problems)) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_good_line_parses() {
        let entry = parse_entry(&line("b", &["a"], "use {{a}}")).unwrap();
        assert_eq!(entry.custom_id, "b");
        assert_eq!(entry.depends_on, vec!["a"]);
        assert_eq!(entry.request.model(), "gpt-4o-mini");
        assert_eq!(entry.provider, None);
    }

    #[test]
    fn every_endpoint_parses_and_bad_bodies_name_the_custom_id() {
        let endpoint_line = |url: &str, body: serde_json::Value| {
            serde_json::json!({"custom_id": "e1", "method": "POST", "url": url, "body": body, "depends_on": ["a"]})
                .to_string()
        };
        for (url, body) in [
            (
                "/v1/embeddings",
                serde_json::json!({"model": "text-embedding-3-small", "input": ["x {{a}}", "y"], "dimensions": 8}),
            ),
            (
                "/v1/completions",
                serde_json::json!({"model": "gpt-3.5-turbo-instruct", "prompt": "{{a}}", "best_of": 2}),
            ),
            (
                "/v1/responses",
                serde_json::json!({"model": "gpt-4o", "input": "{{a}}", "instructions": "brief"}),
            ),
            (
                "/v1/moderations",
                serde_json::json!({"input": [{"type": "text", "text": "{{a}}"}]}),
            ),
        ] {
            let entry = parse_entry(&endpoint_line(url, body.clone())).unwrap();
            assert_eq!(entry.request.endpoint().url(), url);
            assert_eq!(entry.request.to_value(), body);
        }
        let chat_shaped = endpoint_line(
            "/v1/embeddings",
            serde_json::json!({"model": "text-embedding-3-small", "messages": [{"role": "user", "content": "x"}]}),
        );
        let problems = parse_entry(&chat_shaped).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("body.input is missing")
                && problems[0].contains("\"messages\" is for /v1/chat/completions")
                && problems[0].ends_with("(custom_id \"e1\")"),
            "{problems:?}"
        );
        let placeholder = endpoint_line(
            "/v1/responses",
            serde_json::json!({"model": "gpt-4o", "input": "{{zz}}"}),
        );
        let problems = parse_entry(&placeholder).unwrap_err();
        assert!(problems[0].contains("placeholder {{zz}}"), "{problems:?}");
    }

    #[test]
    fn every_problem_of_a_line_is_reported() {
        let text = r#"{"method":"GET","url":"/v1/images/generations","body":{"model":"m","messages":[],"stream":true},"provider":"mistral","priority":1.5}"#;
        let problems =
            parse_checked(text, Some((&Registry::default(), Provider::OpenAi))).unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "missing \"custom_id\"",
            "\"method\" is \"GET\"",
            "\"url\" is \"/v1/images/generations\"; supported: \"/v1/chat/completions\", \"/v1/embeddings\"",
            "unknown provider \"mistral\"",
            "\"priority\" must be an integer",
            "body.messages is empty",
            "body.stream is true",
        ] {
            assert!(all.contains(expected), "{expected:?} missing from:\n{all}");
        }
    }

    #[test]
    fn bad_json_and_bad_bodies() {
        let error = parse_entry("{\"custom_id\": ").unwrap_err();
        assert!(error[0].starts_with("not valid JSON"), "{error:?}");
        assert!(!error[0].contains("line 1"), "{error:?}");
        assert_eq!(parse_entry("[1]").unwrap_err(), vec!["not a JSON object"]);
        let no_model = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"x"}]}}"#;
        let error = parse_entry(no_model).unwrap_err();
        assert!(error[0].contains("model"), "{error:?}");
        let placeholder = line("b", &[], "use {{a}}");
        let error = parse_entry(&placeholder).unwrap_err();
        assert!(error[0].contains("placeholder {{a}}"), "{error:?}");
    }

    #[test]
    fn graph_problems_carry_line_numbers() {
        let lines = vec![
            line("a", &["c"], "x"),
            line("b", &["a"], "x"),
            line("c", &["b"], "x"),
            line("d", &["nowhere"], "x"),
            line("d", &[], "x"),
            line("e", &["e"], "x"),
        ];
        let found = problems("graph.jsonl", &lines);
        let text: Vec<String> = found
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("1: dependency cycle: a -> c -> b -> a")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("4: \"depends_on\" names \"nowhere\"")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("5: duplicate custom_id \"d\" (first used on line 4)")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t == "6: \"e\" depends on itself"),
            "{text:?}"
        );
    }

    proptest::proptest! {
        /// Any DAG, in any file order: the push order is a permutation with
        /// every dependency before its dependents, and a file already in
        /// such an order is kept as it is.
        #[test]
        fn push_order_puts_dependencies_first(
            (n, edges) in (1usize..40).prop_flat_map(|n| {
                (proptest::strategy::Just(n), proptest::collection::vec((0..n, 0..n), 0..80))
            }),
            shuffle in proptest::collection::vec(proptest::num::usize::ANY, 0..40),
        ) {
            // Rank r depends only on lower ranks: acyclic by construction.
            let mut position: Vec<usize> = (0..n).collect();
            for (i, s) in shuffle.iter().enumerate() {
                let j = s % n;
                position.swap(i % n, j);
            }
            let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
            for (a, b) in edges {
                if a != b {
                    let (low, high) = (a.min(b), a.max(b));
                    if !deps[high].contains(&low) {
                        deps[high].push(low);
                    }
                }
            }
            // Entry `position[r]` of the file holds rank r.
            let mut file_deps = vec![Vec::new(); n];
            for rank in 0..n {
                file_deps[position[rank]] = deps[rank].iter().map(|&d| position[d] as u32).collect();
            }
            let mut adjacency = Adjacency::with_entries(n);
            for list in &file_deps {
                adjacency.push_list(list.iter().copied());
            }
            let batch = Batch {
                path: PathBuf::new(),
                ids: IdTable::default(),
                lines: vec![LineMeta { offset: 0, len: 0, line: 1, provider: Provider::OpenAi, endpoint: Endpoint::ChatCompletions }; n],
                deps: adjacency,
            };
            let order = batch.push_order();
            let mut seen = vec![false; n];
            for &entry in &order {
                for &dep in batch.deps.of(entry) {
                    proptest::prop_assert!(seen[dep as usize], "{dep} after {entry}");
                }
                seen[entry as usize] = true;
            }
            proptest::prop_assert!(seen.iter().all(|&s| s));
            proptest::prop_assert_eq!(order.len(), n);
            let sorted = (0..n).all(|i| file_deps[i].iter().all(|&d| (d as usize) < i));
            if sorted {
                proptest::prop_assert_eq!(order, (0..n as u32).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let path = write_temp("bom.jsonl", &[format!("\u{feff}{}", line("a", &[], "x"))]);
        let batch = load(&path, &Registry::default(), Provider::OpenAi, |_, _| {}).unwrap();
        let mut reader = LineReader::open(&path).unwrap();
        let text = reader.read(&batch.lines[0]).unwrap().to_owned();
        assert_eq!(parse_entry(&text).unwrap().custom_id, "a");
    }

    #[test]
    fn a_valid_batch_loads_with_places_and_order() {
        let lines = vec![
            line("sum", &["b", "a"], "{{a}} {{b}}"),
            String::new(),
            line("a", &[], "x"),
            line("b", &["a"], "{{a}}"),
        ];
        let path = write_temp("valid.jsonl", &lines);
        let mut seen = Vec::new();
        let batch = load(&path, &Registry::default(), Provider::Groq, |i, entry| {
            seen.push((i, entry.custom_id.clone()))
        })
        .unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(seen[2], (2, "b".to_owned()));
        assert_eq!(batch.lines[1].line, 3);
        assert_eq!(batch.lines[0].provider, Provider::Groq);
        assert_eq!(batch.ids.get("b"), Some(2));
        assert_eq!(batch.ids.get("zz"), None);
        assert_eq!(batch.deps.of(0), &[2, 1]);
        assert_eq!(batch.push_order(), vec![1, 2, 0]);
        assert_eq!(batch.deps.reversed().of(1), &[0, 2]);
        let mut reader = LineReader::open(&path).unwrap();
        for &i in &[2u32, 0, 1] {
            let text = reader.read(&batch.lines[i as usize]).unwrap().to_owned();
            assert_eq!(parse_entry(&text).unwrap().custom_id, batch.ids.name(i));
        }
    }
}
