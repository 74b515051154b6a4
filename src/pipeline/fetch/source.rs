//! The randomuser.me client: one page of results, with timeouts and retries that honour `Retry-After`.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use tracing::warn;

use crate::config::{FetchConfig, redact_url};
use crate::retry::Backoff;

/// An HTTP source speaking randomuser.me's JSON.
pub struct HttpSource {
    client: reqwest::Client,
    url: String,
    settings: FetchConfig,
}

/// How one attempt ended when it did not succeed.
enum Failure {
    /// May pass: try again after the server's `Retry-After`, or the backoff when it gave none.
    Retry(String, Option<Duration>),
    /// Cannot pass by retrying.
    Fatal(anyhow::Error),
}

impl HttpSource {
    pub fn new(url: &str, settings: &FetchConfig) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("userpipe/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the http client")?;
        Ok(Self {
            client,
            url: url.to_owned(),
            settings: settings.clone(),
        })
    }

    /// `GET {url}?results=n`: the results array, after up to `max_attempts` attempts.
    pub async fn page(&self, n: usize) -> anyhow::Result<Vec<Value>> {
        let mut backoff = Backoff::new(self.settings.backoff, self.settings.max_backoff);
        let mut attempt = 1;
        loop {
            match self.attempt(n).await {
                Ok(results) => return Ok(results),
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry(reason, after)) => {
                    if attempt >= self.settings.max_attempts {
                        bail!(
                            "{reason} (gave up after {attempt} attempts at {})",
                            redact_url(&self.url)
                        );
                    }
                    let delay = backoff.next_delay();
                    let wait = after.unwrap_or(delay).min(self.settings.max_backoff);
                    warn!(
                        message = "fetch attempt failed, retrying",
                        attempt,
                        reason,
                        retry_in_ms = wait.as_millis() as u64
                    );
                    tokio::time::sleep(wait).await;
                }
            }
            attempt += 1;
        }
    }

    async fn attempt(&self, n: usize) -> Result<Vec<Value>, Failure> {
        let response = self
            .client
            .get(&self.url)
            .query(&[("results", n)])
            .send()
            .await
            .map_err(|e| Failure::Retry(describe(&e, self.settings.timeout), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Retry(describe(&e, self.settings.timeout), None))?;
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(Failure::Retry(
                format!("the source answered http {status}"),
                retry_after,
            ));
        }
        let parsed: Result<Value, _> = serde_json::from_slice(&body);
        if let Ok(Value::Object(object)) = &parsed
            && let Some(error) = object.get("error")
        {
            let error = error
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| error.to_string());
            return Err(Failure::Fatal(anyhow!(
                "the source answered http {status} with error: {error}"
            )));
        }
        if !status.is_success() {
            return Err(Failure::Fatal(anyhow!("the source answered http {status}")));
        }
        match parsed {
            Ok(Value::Object(mut object)) => match object.remove("results") {
                Some(Value::Array(results)) => Ok(results),
                _ => Err(Failure::Fatal(anyhow!(
                    "the source's response has no `results` array"
                ))),
            },
            Ok(_) => Err(Failure::Fatal(anyhow!(
                "the source's response is not a json object"
            ))),
            Err(error) => Err(Failure::Fatal(anyhow!(
                "the source's response is not json: {error}"
            ))),
        }
    }
}

fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        format!(
            "the request timed out after {}",
            humantime::format_duration(timeout)
        )
    } else if error.is_connect() {
        format!("cannot connect to the source: {}", source_chain(error))
    } else {
        format!("the request failed: {}", source_chain(error))
    }
}

/// The error and its causes, without the URL (it may carry credentials).
fn source_chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(c) = cause {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if text.is_empty() {
        "unknown error".into()
    } else {
        text
    }
}
