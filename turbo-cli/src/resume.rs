//! Reading the results an earlier run left in the output file.
//!
//! A run writes each result with one `write`, so a kill leaves at most one
//! torn line, the last: it is cut off and its request runs again.
//! Every other line is a result that must not be paid for twice.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use turbo_core::ChatResponse;

use crate::input::{IdTable, Problem};
use crate::output::DEPENDENCY_FAILED;

/// What an earlier run recorded for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prior {
    /// No result: run it.
    Missing,
    /// Completed: keep, never send again.
    Completed,
    /// Failed (kept unless `--retry-failed`).
    Failed,
    /// Skipped because a dependency failed (kept unless `--retry-failed`).
    Skipped,
}

/// The state of the output file before a resumed run.
#[derive(Debug)]
pub struct Existing {
    /// Per entry.
    pub prior: Vec<Prior>,
    /// For skipped entries: the failed ancestor the line names.
    pub skipped_root: HashMap<u32, u32>,
    /// Result lines kept.
    pub kept: usize,
    /// Lines whose custom_id is not in the input (kept as they are).
    pub unknown: usize,
    /// Extra lines for an id that already had one (removed).
    pub duplicates: usize,
    /// Failed or skipped lines removed for `--retry-failed`.
    pub removed: usize,
    /// Where a torn last line starts (cut off by [`Existing::apply`]).
    pub torn_at: Option<u64>,
    /// Whether the last line lacks its line break (complete, but written by
    /// something else): the writer adds one before appending.
    pub needs_newline: bool,
}

impl Existing {
    /// Nothing recorded: every entry runs.
    pub fn empty(entries: usize) -> Self {
        Self {
            prior: vec![Prior::Missing; entries],
            skipped_root: HashMap::new(),
            kept: 0,
            unknown: 0,
            duplicates: 0,
            removed: 0,
            torn_at: None,
            needs_newline: false,
        }
    }
}

/// Why the output file cannot be resumed.
#[derive(Debug)]
pub enum ScanError {
    /// Reading or rewriting failed.
    Io(io::Error),
    /// Complete lines that are not result lines, by line number.
    Invalid(Vec<Problem>),
}

impl From<io::Error> for ScanError {
    fn from(error: io::Error) -> Self {
        ScanError::Io(error)
    }
}

#[derive(Deserialize)]
struct Header {
    custom_id: String,
    #[serde(default)]
    response: Option<ResponseHeader>,
    #[serde(default)]
    error: Option<ErrorHeader>,
}

#[derive(Deserialize)]
struct ResponseHeader {
    status_code: u16,
}

#[derive(Deserialize)]
struct ErrorHeader {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    failed_dependency: Option<String>,
}

impl Header {
    fn classify(&self) -> Prior {
        match (&self.error, &self.response) {
            (None, Some(response)) if (200..300).contains(&response.status_code) => {
                Prior::Completed
            }
            (Some(error), _) if error.code.as_deref() == Some(DEPENDENCY_FAILED) => Prior::Skipped,
            _ => Prior::Failed,
        }
    }
}

/// One line of the file: where it is, and its content without the break.
struct RawLine {
    offset: u64,
    number: u32,
    terminated: bool,
}

/// Calls `each` on every line of `path`; stops early when it returns false.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&RawLine, &[u8]) -> io::Result<bool>,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut buffer = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u32;
    loop {
        buffer.clear();
        let read = reader.read_until(b'\n', &mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        number = number.saturating_add(1);
        let terminated = buffer.last() == Some(&b'\n');
        let mut content: &[u8] = &buffer;
        while let [rest @ .., b'\n' | b'\r'] = content {
            content = rest;
        }
        let line = RawLine {
            offset,
            number,
            terminated,
        };
        offset += read as u64;
        if !each(&line, content)? {
            return Ok(());
        }
    }
}

fn is_blank(content: &[u8]) -> bool {
    content.iter().all(u8::is_ascii_whitespace)
}

/// Reads the output file of an earlier run without changing it: records
/// what each entry already has, where a torn last line starts and, with
/// `retry_failed`, which failed and skipped lines are to go.
/// [`Existing::apply`] then makes the file match.
pub fn scan(path: &Path, ids: &IdTable, retry_failed: bool) -> Result<Existing, ScanError> {
    let mut existing = Existing::empty(ids.len());
    if !path.exists() {
        return Ok(existing);
    }
    let mut problems = Vec::new();
    for_each_line(path, |line, content| {
        if is_blank(content) {
            return Ok(true);
        }
        let header = match serde_json::from_slice::<Header>(content) {
            Ok(header) => header,
            Err(_) if !line.terminated => {
                existing.torn_at = Some(line.offset);
                return Ok(false);
            }
            Err(error) => {
                problems.push(Problem {
                    line: line.number,
                    message: format!(
                        "not a result line ({error}); remove or fix it, then resume again"
                    ),
                });
                return Ok(true);
            }
        };
        if !line.terminated {
            existing.needs_newline = true;
        }
        let Some(index) = ids.get(&header.custom_id) else {
            existing.unknown += 1;
            return Ok(true);
        };
        let class = header.classify();
        let prior = &mut existing.prior[index as usize];
        if *prior != Prior::Missing {
            existing.duplicates += 1;
            if class != Prior::Completed {
                return Ok(true);
            }
        }
        *prior = class;
        if class == Prior::Skipped {
            let root = header
                .error
                .as_ref()
                .and_then(|error| error.failed_dependency.as_deref())
                .and_then(|name| ids.get(name));
            if let Some(root) = root {
                existing.skipped_root.insert(index, root);
            }
        }
        Ok(true)
    })?;
    if !problems.is_empty() {
        return Err(ScanError::Invalid(problems));
    }
    if retry_failed {
        for (index, prior) in existing.prior.iter_mut().enumerate() {
            if matches!(prior, Prior::Failed | Prior::Skipped) {
                *prior = Prior::Missing;
                existing.skipped_root.remove(&(index as u32));
                existing.removed += 1;
            }
        }
    }
    existing.kept = existing
        .prior
        .iter()
        .filter(|prior| **prior != Prior::Missing)
        .count();
    Ok(existing)
}

impl Existing {
    /// Makes the file match the scan: cuts off a torn last line and, when
    /// lines are to go (failed ones for `--retry-failed`, duplicates),
    /// rewrites it through a temporary file and an atomic rename, so that
    /// every custom_id ends up in the file exactly once. Done only once
    /// nothing else can stop the run.
    pub fn apply(&mut self, path: &Path, ids: &IdTable) -> io::Result<()> {
        if let Some(offset) = self.torn_at {
            OpenOptions::new().write(true).open(path)?.set_len(offset)?;
        }
        if self.removed > 0 || self.duplicates > 0 {
            rewrite(path, ids, &self.prior)?;
            self.needs_newline = false;
        }
        Ok(())
    }
}

/// Keeps, for each entry, its first line of the recorded class, and every
/// line of an unknown id; the new file replaces the old one atomically.
fn rewrite(path: &Path, ids: &IdTable, prior: &[Prior]) -> io::Result<()> {
    let temporary = temporary_path(path);
    let file = File::create(&temporary)?;
    let mut out = BufWriter::new(file);
    let mut written = vec![false; prior.len()];
    let result = for_each_line(path, |_, content| {
        if is_blank(content) {
            return Ok(true);
        }
        let keep = match serde_json::from_slice::<Header>(content) {
            Ok(header) => match ids.get(&header.custom_id) {
                None => true,
                Some(index) => {
                    let index = index as usize;
                    let keep = !written[index]
                        && prior[index] != Prior::Missing
                        && header.classify() == prior[index];
                    written[index] |= keep;
                    keep
                }
            },
            Err(_) => false,
        };
        if keep {
            out.write_all(content)?;
            out.write_all(b"\n")?;
        }
        Ok(true)
    });
    let finished = result.and_then(|()| {
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    });
    if finished.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    finished?;
    // Make the rename itself durable; not every platform allows opening a
    // directory, and the rename is already atomic without it.
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

#[derive(Deserialize)]
struct FullLine {
    #[serde(default)]
    response: Option<FullResponse>,
}

#[derive(Deserialize)]
struct FullResponse {
    status_code: u16,
    #[serde(default)]
    body: Value,
}

/// The text answers of the completed entries in `needed`, for filling
/// `{{id}}` placeholders of entries still to run.
pub fn load_answers(
    path: &Path,
    ids: &IdTable,
    needed: &[bool],
) -> io::Result<HashMap<u32, String>> {
    let mut answers = HashMap::new();
    if !needed.iter().any(|&n| n) || !path.exists() {
        return Ok(answers);
    }
    for_each_line(path, |_, content| {
        let Ok(header) = serde_json::from_slice::<Header>(content) else {
            return Ok(true);
        };
        let Some(index) = ids.get(&header.custom_id) else {
            return Ok(true);
        };
        if !needed.get(index as usize).copied().unwrap_or(false)
            || header.classify() != Prior::Completed
            || answers.contains_key(&index)
        {
            return Ok(true);
        }
        if let Ok(FullLine {
            response: Some(response),
            ..
        }) = serde_json::from_slice::<FullLine>(content)
        {
            let response = ChatResponse::from_body(response.status_code, response.body);
            if let Some(text) = response.text() {
                answers.insert(index, text.to_owned());
            }
        }
        Ok(true)
    })?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::load;
    use turbo_core::Provider;

    struct Fixture {
        dir: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("turbo-cli-resume-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self { dir }
        }

        fn ids(&self, names: &[&str]) -> IdTable {
            let path = self.dir.join("in.jsonl");
            let text: String = names
                .iter()
                .map(|id| {
                    format!(
                        "{{\"custom_id\":\"{id}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}]}}}}\n"
                    )
                })
                .collect();
            std::fs::write(&path, text).unwrap();
            load(
                &path,
                &crate::registry::Registry::default(),
                Provider::OpenAi,
                |_, _| {},
            )
            .unwrap()
            .ids
        }
    }

    fn ok(id: &str, answer: &str) -> String {
        format!(
            "{{\"id\":\"r\",\"custom_id\":\"{id}\",\"response\":{{\"status_code\":200,\"request_id\":null,\"body\":{{\"choices\":[{{\"message\":{{\"role\":\"assistant\",\"content\":\"{answer}\"}}}}]}}}},\"error\":null}}\n"
        )
    }

    fn failed(id: &str) -> String {
        format!(
            "{{\"id\":\"r\",\"custom_id\":\"{id}\",\"response\":{{\"status_code\":500,\"body\":{{}}}},\"error\":{{\"code\":\"server_error\",\"message\":\"x\"}}}}\n"
        )
    }

    fn skipped(id: &str, root: &str) -> String {
        format!(
            "{{\"id\":\"r\",\"custom_id\":\"{id}\",\"response\":null,\"error\":{{\"code\":\"dependency_failed\",\"message\":\"x\",\"failed_dependency\":\"{root}\"}}}}\n"
        )
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let fixture = Fixture::new("torn");
        let ids = fixture.ids(&["a", "b", "c"]);
        let out = fixture.dir.join("out.jsonl");
        let whole = ok("a", "A");
        let torn = &ok("b", "B")[..20];
        std::fs::write(&out, format!("{whole}{torn}")).unwrap();
        let mut existing = scan(&out, &ids, false).unwrap();
        assert_eq!(existing.torn_at, Some(whole.len() as u64));
        let answers = load_answers(&out, &ids, &[true, true, false]).unwrap();
        assert_eq!(answers.len(), 1);
        existing.apply(&out, &ids).unwrap();
        assert_eq!(
            existing.prior,
            vec![Prior::Completed, Prior::Missing, Prior::Missing]
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), whole);
        let answers = load_answers(&out, &ids, &[true, true, false]).unwrap();
        assert_eq!(answers.get(&0).map(String::as_str), Some("A"));
        assert_eq!(answers.len(), 1);
    }

    /// A kill can cut the file anywhere: every cut resumes to whole lines,
    /// each id at most once, and exactly the ids whose line survived count
    /// as done.
    #[test]
    fn every_cut_of_the_file_resumes_cleanly() {
        let fixture = Fixture::new("cuts");
        let names = ["a", "b", "c", "d"];
        let ids = fixture.ids(&names);
        let out = fixture.dir.join("out.jsonl");
        let whole: String = [ok("a", "A"), failed("b"), skipped("c", "b"), ok("d", "D")].concat();
        for cut in 0..=whole.len() {
            std::fs::write(&out, &whole[..cut]).unwrap();
            let mut existing = scan(&out, &ids, false).unwrap();
            existing.apply(&out, &ids).unwrap();
            let text = std::fs::read_to_string(&out).unwrap();
            assert!(whole.starts_with(&text), "cut {cut}: not a prefix");
            let complete = text.lines().count();
            let expected_complete =
                whole[..cut].matches('\n').count() + usize::from(existing.needs_newline);
            assert_eq!(complete, expected_complete, "cut {cut}");
            let done = existing
                .prior
                .iter()
                .filter(|p| **p != Prior::Missing)
                .count();
            assert_eq!(done, complete, "cut {cut}");
            assert!(
                text.is_empty() || text.ends_with('\n') || existing.needs_newline,
                "cut {cut}: a torn line survived"
            );
        }
    }

    #[test]
    fn a_complete_line_without_break_is_kept() {
        let fixture = Fixture::new("nobreak");
        let ids = fixture.ids(&["a"]);
        let out = fixture.dir.join("out.jsonl");
        std::fs::write(&out, ok("a", "A").trim_end()).unwrap();
        let existing = scan(&out, &ids, false).unwrap();
        assert_eq!(existing.torn_at, None);
        assert!(existing.needs_newline);
        assert_eq!(existing.prior, vec![Prior::Completed]);
    }

    #[test]
    fn retry_failed_rewrites_without_failures_and_duplicates() {
        let fixture = Fixture::new("retry");
        let ids = fixture.ids(&["a", "b", "c", "d"]);
        let out = fixture.dir.join("out.jsonl");
        let text = [
            ok("a", "A"),
            failed("b"),
            skipped("c", "b"),
            ok("a", "again"),
            ok("zz", "unknown"),
        ]
        .concat();
        std::fs::write(&out, &text).unwrap();

        let mut kept = scan(&out, &ids, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            text,
            "scan changes nothing"
        );
        kept.apply(&out, &ids).unwrap();
        assert_eq!(
            kept.prior,
            vec![
                Prior::Completed,
                Prior::Failed,
                Prior::Skipped,
                Prior::Missing
            ]
        );
        assert_eq!(kept.skipped_root.get(&2), Some(&1));
        assert_eq!(kept.duplicates, 1);
        assert_eq!(kept.unknown, 1);
        let after_dedup = std::fs::read_to_string(&out).unwrap();
        assert_eq!(after_dedup.lines().count(), 4);

        let mut existing = scan(&out, &ids, true).unwrap();
        assert_eq!(existing.removed, 2);
        existing.apply(&out, &ids).unwrap();
        assert_eq!(
            existing.prior,
            vec![
                Prior::Completed,
                Prior::Missing,
                Prior::Missing,
                Prior::Missing
            ]
        );
        let rewritten = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            rewritten,
            format!("{}{}", ok("a", "A"), ok("zz", "unknown"))
        );
        assert!(!temporary_path(&out).exists());
    }

    #[test]
    fn a_broken_middle_line_stops_the_resume() {
        let fixture = Fixture::new("broken");
        let ids = fixture.ids(&["a"]);
        let out = fixture.dir.join("out.jsonl");
        std::fs::write(&out, format!("not json\n{}", ok("a", "A"))).unwrap();
        match scan(&out, &ids, false) {
            Err(ScanError::Invalid(problems)) => assert_eq!(problems[0].line, 1),
            other => panic!("expected a problem, got {other:?}"),
        }
    }
}
