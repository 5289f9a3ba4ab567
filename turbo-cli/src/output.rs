//! Result lines in the OpenAI Batch output format. Lines are queued whole and
//! [`ResultWriter::flush`] appends all queued lines with one `write`, so a
//! killed run leaves at most one torn line, always the last.
//!
//! A write that fails (a full disk) is undone: the file is cut back to its
//! last whole line and the lines stay queued in memory, so that a later flush
//! writes them whole, never after a torn fragment in the middle of the file.

use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use turbo_core::{ChatResponse, WorkError};

/// `error.code` of a line whose dependency failed.
pub const DEPENDENCY_FAILED: &str = "dependency_failed";

#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    custom_id: &'a str,
    response: Option<ResponsePart<'a>>,
    error: Option<ErrorPart<'a>>,
}

#[derive(Serialize)]
struct ResponsePart<'a> {
    status_code: u16,
    request_id: Option<&'a str>,
    body: &'a Value,
}

#[derive(Serialize)]
struct ErrorPart<'a> {
    code: &'a str,
    message: &'a str,
    /// Our extension for skipped lines: the failed ancestor's custom_id, so a
    /// resumed run names the same root cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_dependency: Option<&'a str>,
}

/// Appends result lines to the output file.
///
/// `completed`, `failed` and `skipped` queue a whole line; [`Self::flush`]
/// writes what is queued. The run loop flushes after each batch of results
/// that arrived together, so nothing waits in the queue while the loop waits
/// for more, and the file gets one `write` per batch instead of per line.
pub struct ResultWriter {
    file: File,
    id_prefix: String,
    sequence: u64,
    /// Whole lines, each ending in `\n`, not yet written.
    pending: Vec<u8>,
    /// The caller's tags of the queued lines (see [`Self::tag`]), each with
    /// the end of its line in `pending`.
    tags: Vec<(u32, usize)>,
    /// The file's length after the last successful write: everything up to
    /// it is whole lines.
    committed: u64,
    /// A failed write could not be undone: writing more would leave a torn
    /// line in the middle of the file.
    broken: bool,
}

impl ResultWriter {
    /// Opens `path` for appending (creating it), first completing a last line
    /// that lacks its line break.
    pub fn open(path: &Path, needs_newline: bool) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        if needs_newline {
            file.write_all(b"\n")?;
        }
        let committed = file.metadata()?.len();
        // A per-process prefix keeps line ids apart across resumed runs.
        let seed = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), std::time::SystemTime::now()));
        Ok(Self {
            file,
            id_prefix: format!("batch_req_{:012x}", seed & 0xffff_ffff_ffff),
            sequence: 0,
            pending: Vec::with_capacity(64 * 1024),
            tags: Vec::new(),
            committed,
            broken: false,
        })
    }

    /// Tags the line queued last with `tag` (the caller's line number):
    /// [`Self::flush_tagged`] reports the tags of the lines it wrote.
    pub fn tag(&mut self, tag: u32) {
        self.tags.push((tag, self.pending.len()));
    }

    /// How many tagged lines are queued, not yet written.
    pub fn queued(&self) -> usize {
        self.tags.len()
    }

    /// The tags of the queued lines.
    pub fn queued_tags(&self) -> Vec<u32> {
        self.tags.iter().map(|(tag, _)| *tag).collect()
    }

    /// Writes the queued lines (one `write`); a no-op when none are queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_tagged(&mut Vec::new())
    }

    /// Writes the queued lines and appends their tags to `written`. When
    /// the one write fails (a full disk), it is undone and the lines are
    /// written one at a time, as many as fit; the rest stay queued for the
    /// next call, and the error is returned.
    pub fn flush_tagged(&mut self, written: &mut Vec<u32>) -> io::Result<()> {
        if self.pending.is_empty() {
            written.extend(self.tags.drain(..).map(|(tag, _)| tag));
            return Ok(());
        }
        if self.broken {
            return Err(io::Error::other(
                "an earlier failed write could not be undone, so nothing more is written",
            ));
        }
        // One write of whole lines: with O_APPEND a reader (or a kill) sees
        // each line whole or, at worst, the last one torn at the end of the file.
        let Err(error) = self.append(self.pending.len()) else {
            self.pending.clear();
            written.extend(self.tags.drain(..).map(|(tag, _)| tag));
            return Ok(());
        };
        // Save what fits, line by line.
        let mut done_bytes = 0;
        let mut done_lines = 0;
        let ends: Vec<usize> = self.tags.iter().map(|(_, end)| *end).collect();
        for end in ends {
            let line = self.pending[done_bytes..end].to_vec();
            if self.append_bytes(&line).is_err() {
                break;
            }
            done_bytes = end;
            done_lines += 1;
        }
        self.pending.drain(..done_bytes);
        written.extend(self.tags.drain(..done_lines).map(|(tag, _)| tag));
        for (_, end) in &mut self.tags {
            *end -= done_bytes;
        }
        Err(error)
    }

    /// Appends the first `len` queued bytes; see [`Self::append_bytes`].
    fn append(&mut self, len: usize) -> io::Result<()> {
        let bytes = std::mem::take(&mut self.pending);
        let result = self.append_bytes(&bytes[..len]);
        self.pending = bytes;
        result
    }

    /// Appends whole lines; a failed write is cut off the file again, so the
    /// file always ends with a whole line.
    fn append_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the output file could not be restored"));
        }
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.committed += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                if self.file.set_len(self.committed).is_err() {
                    self.broken = true;
                }
                Err(error)
            }
        }
    }

    /// A completed request.
    pub fn completed(&mut self, custom_id: &str, response: &ChatResponse) -> io::Result<()> {
        let id = self.next_id();
        // The body as the provider sent it, when it fits on one line (JSON
        // strings cannot hold a raw line break, so any inside is layout):
        // re-serialising a parsed tree cost more than the rest of the line.
        if let Some(raw) = response.raw_json().map(<[u8]>::trim_ascii)
            && !raw.iter().any(|&byte| byte == b'\n' || byte == b'\r')
        {
            return self.write_raw(&id, custom_id, response, raw);
        }
        self.write(&Line {
            id: &id,
            custom_id,
            response: Some(ResponsePart {
                status_code: response.status(),
                request_id: response.request_id(),
                body: response.body(),
            }),
            error: None,
        })
    }

    /// A request that failed after `attempts` attempts. A provider answer with
    /// an HTTP status goes into `response` (as OpenAI's batch output does),
    /// and `error` says what happened either way.
    pub fn failed(&mut self, custom_id: &str, error: &WorkError, attempts: u32) -> io::Result<()> {
        let id = self.next_id();
        let message = if attempts > 1 {
            format!("{error} (after {attempts} attempts)")
        } else {
            error.to_string()
        };
        let provider = error.provider_error();
        let synthetic_body;
        let response = match provider.and_then(|e| e.status().map(|status| (e, status))) {
            Some((provider_error, status)) => {
                let body = match provider_error.error_body() {
                    Some(body) => body,
                    None => {
                        synthetic_body = serde_json::json!({
                            "error": {"message": message, "type": "turbo_run", "code": error.code()}
                        });
                        &synthetic_body
                    }
                };
                Some(ResponsePart {
                    status_code: status,
                    request_id: provider_error.request_id(),
                    body,
                })
            }
            None => None,
        };
        self.write(&Line {
            id: &id,
            custom_id,
            response,
            error: Some(ErrorPart {
                code: error.code(),
                message: &message,
                failed_dependency: None,
            }),
        })
    }

    /// A line that never ran because `failed_dependency` failed.
    pub fn skipped(&mut self, custom_id: &str, failed_dependency: &str) -> io::Result<()> {
        let id = self.next_id();
        let message = format!("not run: dependency {failed_dependency:?} failed");
        self.write(&Line {
            id: &id,
            custom_id,
            response: None,
            error: Some(ErrorPart {
                code: DEPENDENCY_FAILED,
                message: &message,
                failed_dependency: Some(failed_dependency),
            }),
        })
    }

    fn next_id(&mut self) -> String {
        self.sequence += 1;
        format!("{}{:012x}", self.id_prefix, self.sequence)
    }

    /// Queues the line of a completed request whose body is `raw`, a JSON
    /// object on one line: the same fields in the same order as [`Line`].
    fn write_raw(
        &mut self,
        id: &str,
        custom_id: &str,
        response: &ChatResponse,
        raw: &[u8],
    ) -> io::Result<()> {
        let start = self.pending.len();
        let out = &mut self.pending;
        let written = (|| {
            out.extend_from_slice(b"{\"id\":");
            serde_json::to_writer(&mut *out, id)?;
            out.extend_from_slice(b",\"custom_id\":");
            serde_json::to_writer(&mut *out, custom_id)?;
            out.extend_from_slice(b",\"response\":{\"status_code\":");
            serde_json::to_writer(&mut *out, &response.status())?;
            out.extend_from_slice(b",\"request_id\":");
            serde_json::to_writer(&mut *out, &response.request_id())?;
            out.extend_from_slice(b",\"body\":");
            out.extend_from_slice(raw);
            out.extend_from_slice(b"},\"error\":null}\n");
            Ok::<(), serde_json::Error>(())
        })();
        written.map_err(|error| {
            self.pending.truncate(start);
            io::Error::other(error)
        })
    }

    /// Queues one line; a line that fails to serialise leaves nothing behind.
    fn write(&mut self, line: &Line<'_>) -> io::Result<()> {
        let start = self.pending.len();
        if let Err(error) = serde_json::to_writer(&mut self.pending, line) {
            self.pending.truncate(start);
            return Err(io::Error::other(error));
        }
        self.pending.push(b'\n');
        Ok(())
    }
}

impl Drop for ResultWriter {
    /// Lines queued when the writer goes away are still written (best effort:
    /// the error has nobody to go to).
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbo_core::{ProviderError, Usage};

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("turbo-cli-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn lines_have_the_batch_output_shape() {
        let path = temp("shape.jsonl");
        let mut writer = ResultWriter::open(&path, false).unwrap();
        let response =
            ChatResponse::synthetic("m", "hello", Usage::new(3, 1)).with_request_id("req-1");
        writer.completed("a", &response).unwrap();
        let server = ProviderError::Server {
            status: 503,
            retry_after: None,
            body: Some(serde_json::json!({"error": {"message": "busy"}})),
            request_id: Some("req-2".into()),
        };
        writer.failed("b", &WorkError::Provider(server), 4).unwrap();
        let timeout = ProviderError::Timeout {
            timeout: Some(std::time::Duration::from_secs(1)),
        };
        writer
            .failed("c", &WorkError::Provider(timeout), 1)
            .unwrap();
        writer.skipped("d", "b").unwrap();
        assert!(lines(&path).is_empty(), "queued lines wait for flush");
        writer.flush().unwrap();
        let out = lines(&path);
        assert_eq!(out.len(), 4);
        assert!(out[0]["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_ne!(out[0]["id"], out[1]["id"]);
        assert_eq!(out[0]["custom_id"], "a");
        assert_eq!(out[0]["response"]["status_code"], 200);
        assert_eq!(out[0]["response"]["request_id"], "req-1");
        assert_eq!(
            out[0]["response"]["body"]["choices"][0]["message"]["content"],
            "hello"
        );
        assert!(out[0]["error"].is_null());
        assert_eq!(out[1]["response"]["status_code"], 503);
        assert_eq!(out[1]["response"]["body"]["error"]["message"], "busy");
        assert_eq!(out[1]["error"]["code"], "server_error");
        assert!(
            out[1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("4 attempts")
        );
        assert!(out[2]["response"].is_null());
        assert_eq!(out[2]["error"]["code"], "timeout");
        assert_eq!(out[3]["error"]["code"], DEPENDENCY_FAILED);
        assert_eq!(out[3]["error"]["failed_dependency"], "b");
        assert!(
            out[3]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"b\"")
        );
    }

    #[test]
    fn raw_bodies_are_copied_verbatim_when_they_fit_on_one_line() {
        let path = temp("raw.jsonl");
        let mut writer = ResultWriter::open(&path, false).unwrap();
        let one_line = br#"{"z":1,"a":"x\ny","choices":[{"message":{"content":"hi"}}]}"#;
        let response = ChatResponse::from_json_bytes(200, one_line)
            .unwrap()
            .with_request_id("req \"q\"");
        writer.completed("id \"quoted\"", &response).unwrap();
        // Layout line breaks: the body is re-serialised onto one line.
        let laid_out = b"{\n  \"b\": 2,\r\n  \"a\": 1\n}\n";
        let response = ChatResponse::from_json_bytes(200, laid_out).unwrap();
        writer.completed("b", &response).unwrap();
        let synthetic = ChatResponse::synthetic("m", "s", Usage::new(1, 1));
        writer.completed("c", &synthetic).unwrap();
        writer.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let raw_lines: Vec<&str> = text.lines().collect();
        assert_eq!(raw_lines.len(), 3);
        let expected_tail = format!(
            r#","custom_id":"id \"quoted\"","response":{{"status_code":200,"request_id":"req \"q\"","body":{}}},"error":null}}"#,
            std::str::from_utf8(one_line).unwrap()
        );
        assert!(raw_lines[0].ends_with(&expected_tail), "{}", raw_lines[0]);
        let out = lines(&path);
        assert_eq!(out[0]["custom_id"], "id \"quoted\"");
        assert_eq!(out[0]["response"]["body"]["a"], "x\ny");
        assert_eq!(
            out[1]["response"]["body"],
            serde_json::json!({"a": 1, "b": 2})
        );
        assert_eq!(
            out[2]["response"]["body"]["choices"][0]["message"]["content"],
            "s"
        );
        for line in &out {
            assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
            assert!(line["error"].is_null());
        }
    }

    #[test]
    fn tags_report_what_was_written() {
        let path = temp("tags.jsonl");
        let mut writer = ResultWriter::open(&path, false).unwrap();
        writer.skipped("a", "x").unwrap();
        writer.tag(7);
        writer.skipped("b", "x").unwrap();
        writer.tag(9);
        assert_eq!(writer.queued(), 2);
        let mut written = Vec::new();
        writer.flush_tagged(&mut written).unwrap();
        assert_eq!(written, [7, 9]);
        assert_eq!(writer.queued(), 0);
        assert_eq!(lines(&path).len(), 2);
    }

    #[test]
    fn an_unterminated_last_line_is_completed_first() {
        let path = temp("newline.jsonl");
        std::fs::write(&path, "{\"custom_id\":\"x\"}").unwrap();
        let mut writer = ResultWriter::open(&path, true).unwrap();
        writer.skipped("y", "x").unwrap();
        drop(writer);
        assert_eq!(lines(&path).len(), 2, "dropping the writer flushes it");
    }
}
