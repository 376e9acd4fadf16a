//! A small blocking HTTP client for the CLI, on awc inside a one-off actix runtime.

use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;

use crate::config::Config;

/// Where the daemon is and which key to use.
pub struct Client {
    pub base_url: String,
    api_key: Option<String>,
}

/// A response: status and parsed JSON (or the text as a JSON string).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The envelope's message, for printing an error.
    pub fn error_message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}: {}", self.status, self.body))
    }
}

impl Client {
    /// `--url`, else `<data dir>/hivelet.addr`, else the configured `bind`; the key from
    /// `--api-key`, else `<data dir>/admin.key`.
    pub fn discover(
        config: &Config,
        url: Option<&str>,
        api_key: Option<&str>,
    ) -> anyhow::Result<Client> {
        let base_url = match url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => match std::fs::read_to_string(config.paths.addr_file()) {
                Ok(text) => text.trim().trim_end_matches('/').to_string(),
                Err(_) => format!("http://{}", config.bind),
            },
        };
        let api_key = match api_key {
            Some(key) => Some(key.to_string()),
            None => std::fs::read_to_string(config.paths.admin_key())
                .ok()
                .map(|k| k.trim().to_string()),
        };
        Ok(Client { base_url, api_key })
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{}", self.base_url, path);
        let method = awc::http::Method::from_bytes(method.as_bytes())?;
        let key = self.api_key.clone();
        let content_type = content_type.map(str::to_string);
        actix_rt::System::new().block_on(async move {
            let client = awc::Client::builder()
                .timeout(Duration::from_secs(600))
                .finish();
            let mut req = client
                .request(method, &url)
                .insert_header(("X-Hivelet-Source", "cli"));
            if let Some(key) = key {
                req = req.insert_header(("Authorization", format!("Bearer {key}")));
            }
            if let Some(ct) = content_type {
                req = req.insert_header(("Content-Type", ct));
            }
            let sent = match body {
                Some(body) => req.send_body(body).await,
                None => req.send().await,
            };
            let mut resp = sent.map_err(|e| {
                anyhow!("cannot reach hivelet at {url}: {e} (is `hivelet serve` running?)")
            })?;
            let bytes = resp
                .body()
                .limit(64 * 1024 * 1024)
                .await
                .context("reading the response")?;
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            Ok(Reply {
                status: resp.status().as_u16(),
                body,
            })
        })
    }

    /// The key requests are sent with.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request("GET", path, None, None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.request(
            "POST",
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        self.request("DELETE", path, None, None)
    }
}
