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

/// Whether a URL query parameter named `name` carries a secret: its name contains `password`, `passwd`,
/// `secret`, `token`, `apikey` or `api_key`, or has the word `key` or a word starting with `auth` (words
/// split at `_`, `-` and `.`), in any case. `api_key`, `X-Api-Key`, `access_token`, `client_secret`,
/// `sslpassword` and `authorization` are secrets; `sslkey`, a file name, is not.
pub fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let named = ["password", "passwd", "secret", "token", "apikey", "api_key"]
        .iter()
        .any(|word| name.contains(word));
    named
        || name
            .split(['_', '-', '.'])
            .any(|word| word == "key" || word.starts_with("auth"))
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

/// `url` with every secret shown as `***`: the password of its user part, and the value of each query
/// parameter whose name says it is a secret ([`is_secret_parameter`]); the rest as written. The one way a
/// URL is shown: logs, errors, the journal, `/api/jobs`, `config show`. `[unparseable url]` when it is not
/// a URL.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "[unparseable url]".into();
    };
    if parsed.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = parsed.set_password(Some("***"));
    }
    if let Some(query) = parsed.query() {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| {
                let name = url::form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(name, _)| name)
                    .unwrap_or_default();
                match pair.split_once('=') {
                    Some((raw_name, _)) if is_secret_parameter(&name) => format!("{raw_name}=***"),
                    _ => pair.to_owned(),
                }
            })
            .collect();
        parsed.set_query(Some(&redacted.join("&")));
    }
    parsed.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_of_a_url_is_redacted_and_nothing_else() {
        let check = |url: &str, shown: &str| assert_eq!(redact_url(url), shown, "{url}");
        check(
            "postgres://u:hunter2@db:5432/x?sslmode=require&password=hunter2",
            "postgres://u:***@db:5432/x?sslmode=require&password=***",
        );
        check(
            "https://api.example.com/v1/?results=5&api_key=k1&X-Api-Key=k2&access_token=t&client_secret=s&seed=a%20b",
            "https://api.example.com/v1/?results=5&api_key=***&X-Api-Key=***&access_token=***&client_secret=***&seed=a%20b",
        );
        check(
            "postgres://u@db/x?sslpassword=p&sslkey=/etc/k.pem&Authorization=Bearer+x&apikey=1&passwd=2&token&key=3",
            "postgres://u@db/x?sslpassword=***&sslkey=/etc/k.pem&Authorization=***&apikey=***&passwd=***&token&key=***",
        );
        check(
            "postgres://u@db/x?pass%77ord=p",
            "postgres://u@db/x?pass%77ord=***",
        );
        check("https://randomuser.me/api/", "https://randomuser.me/api/");
        check("not a url", "[unparseable url]");
    }

    #[test]
    fn secret_parameters_are_named_by_their_words() {
        for name in [
            "password",
            "PASSWORD",
            "db_passwd",
            "client-secret",
            "refresh_token",
            "apikey",
            "x.api.key",
            "key",
            "auth",
            "authToken",
            "sslpassword",
        ] {
            assert!(is_secret_parameter(name), "{name}");
        }
        for name in [
            "sslkey",
            "sslmode",
            "results",
            "seed",
            "monkey",
            "keys",
            "application_name",
        ] {
            assert!(!is_secret_parameter(name), "{name}");
        }
    }
}
