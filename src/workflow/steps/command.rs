//! `command` steps: run a local program (only when the configuration allows it).
//!
//! The program gets the rendered `stdin` template, or the whole template scope as JSON, on
//! its standard input; its standard output is the step output. The child is killed when
//! the step times out or the run is dropped (`kill_on_drop`).

use std::io::ErrorKind;
use std::process::Stdio;
use std::time::Duration;

use minijinja::Value as JinjaValue;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{json_or_text, snippet, StepError, StepOutput, StepResult};
use crate::workflow::template::render_with;

/// Used when the step sets no `timeout_ms`.
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Standard output above this size fails the step.
const MAX_STDOUT_BYTES: usize = 16 * 1024 * 1024;
/// How much standard error is quoted in a failure.
const STDERR_QUOTE_BYTES: usize = 500;

/// The fields of a command step.
pub(crate) struct CommandStep<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub stdin: Option<&'a str>,
    pub timeout_ms: Option<u64>,
}

pub(crate) async fn run(
    step: CommandStep<'_>,
    scope: &JinjaValue,
    scope_json: &Value,
) -> StepResult {
    let program = step.program;
    let args = step
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            render_with(a, scope).map_err(|e| StepError::template(&format!("args[{i}]"), &e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let input = match step.stdin {
        Some(t) => render_with(t, scope).map_err(|e| StepError::template("stdin", &e))?,
        None => scope_json.to_string(),
    };
    let timeout_ms = step.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);

    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let message = format!("cannot start {program:?}: {e}");
            // A program that is missing or not executable stays so; running out of processes
            // or memory (EAGAIN, ENOMEM) passes.
            match e.kind() {
                ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput => {
                    StepError::permanent(message)
                }
                _ => StepError::retryable(message),
            }
        })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let work = async {
        // Write and read at the same time so a chatty program never blocks on a full pipe.
        let write = async {
            if let Some(mut pipe) = stdin {
                // A program that ignores its input closes the pipe early; that is fine.
                let _ = pipe.write_all(input.as_bytes()).await;
                let _ = pipe.shutdown().await;
            }
        };
        let (_, out, err) = tokio::join!(
            write,
            read_capped(stdout, MAX_STDOUT_BYTES + 1),
            read_capped(stderr, STDERR_QUOTE_BYTES + 1)
        );
        let status = child.wait().await;
        (status, out, err)
    };
    let limit = Duration::from_millis(timeout_ms);
    let Ok((status, out, err)) = actix_rt::time::timeout(limit, work).await else {
        let _ = child.kill().await;
        return Err(StepError::retryable(format!(
            "command {program:?} timed out after {timeout_ms} ms"
        )));
    };
    // The program ran: whatever went wrong from here on may not happen next time.
    let status =
        status.map_err(|e| StepError::retryable(format!("waiting for {program:?} failed: {e}")))?;
    let out = out.map_err(|e| {
        StepError::retryable(format!("reading the output of {program:?} failed: {e}"))
    })?;
    let err = err.unwrap_or_default();
    if !status.success() {
        let stderr = snippet(&err, STDERR_QUOTE_BYTES);
        return Err(StepError::retryable(if stderr.is_empty() {
            format!("command {program:?} failed: {status}")
        } else {
            format!("command {program:?} failed: {status}: {stderr}")
        }));
    }
    if out.len() > MAX_STDOUT_BYTES {
        return Err(StepError::retryable(format!(
            "command {program:?} wrote more than {MAX_STDOUT_BYTES} bytes to standard output"
        )));
    }
    let text = String::from_utf8_lossy(&out).trim().to_owned();
    Ok(StepOutput::new(json_or_text(text)))
}

/// Reads up to `keep` bytes and discards the rest, so the writer never blocks.
async fn read_capped<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    keep: usize,
) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let Some(mut pipe) = pipe else {
        return Ok(buf);
    };
    (&mut pipe).take(keep as u64).read_to_end(&mut buf).await?;
    tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await?;
    Ok(buf)
}
