//! Secrets in the configuration: a value that never prints, and URLs shown without their password.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value that never prints: `Debug` and `Display` show `[redacted]`; `expose` gives the text.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `url` without its password, and the password: from the user part (`postgres://u:pw@host/db`) or from a
/// `password` query parameter (`postgres://u@host/db?password=pw`), both of which PostgreSQL clients accept.
/// `None` when `url` is not a URL.
pub fn split_password(url: &str) -> Option<(url::Url, Option<String>)> {
    let mut parsed = url::Url::parse(url).ok()?;
    let mut password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    if password.is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = parsed.set_password(None);
    }
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.iter().any(|(key, _)| key == "password") {
        let mut kept = Vec::new();
        for (key, value) in pairs {
            if key == "password" {
                password = Some(value);
            } else {
                kept.push((key, value));
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    Some((parsed, password))
}

/// A URL with its password shown as `***`, for logs, errors and `config show`.
pub fn redact_url(url: &str) -> String {
    match split_password(url) {
        Some((mut parsed, Some(_))) => {
            // Cannot fail for a URL with a host; a URL without one cannot have carried a password.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Some((parsed, None)) => parsed.to_string(),
        None => "[unparseable url]".into(),
    }
}

/// A webhook URL shown without what follows its host (`https://hooks.slack.com/***`): a webhook's path and
/// query are its credentials. Empty stays empty.
pub fn redact_webhook(url: &str) -> String {
    if url.is_empty() {
        return String::new();
    }
    match url::Url::parse(url) {
        Ok(parsed) => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{port}/***",
                parsed.scheme(),
                parsed.host_str().unwrap_or_default()
            )
        }
        Err(_) => "[unparseable url]".into(),
    }
}
