//! How a setting's text becomes a value. Each parser here is used twice: by
//! clap for the flag and its environment variable, and (through the serde
//! adapters below) for the same key written as a string in the TOML file,
//! so `lease = "3s"` and `--lease 3s` can never be read differently.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, Error as _};

use crate::auth::{AdminTokens, Secret};

/// A setting that can be switched off by writing `off`; `None` is off.
///
/// An alias rather than a type of its own so that the server keeps using a
/// plain `Option`, and so that clap's derive does not read the `Option` as
/// "this flag may be absent" (an absent flag is handled by
/// [`super::ServeArgs`]; here `None` is a value the user chose).
pub type OrOff<T> = Option<T>;

/// Parses a human duration such as `5s`, `250ms` or `10m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

/// Parses an address, or `off` for none.
pub fn parse_addr_or_off(s: &str) -> Result<OrOff<SocketAddr>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{s:?} is not an address or \"off\" ({e})"))
}

/// Parses a duration, or `off` for none.
pub fn parse_duration_or_off(s: &str) -> Result<OrOff<Duration>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(s).map(Some)
}

/// Parses `name:secret,name:secret` (the flag and environment form).
pub fn parse_admin_tokens(s: &str) -> Result<AdminTokens, String> {
    AdminTokens::parse_list(s)
}

/// http:// or https:// URLs (`alert_webhooks`); a type of its own so that
/// clap reads the flag as one comma-separated value, not as a list of
/// flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Urls(pub Vec<String>);

/// Parses a comma-separated list of http:// or https:// URLs (the flag and
/// environment form of `alert_webhooks`); empty: none.
pub fn parse_urls(s: &str) -> Result<Urls, String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(parse_url)
        .collect::<Result<_, _>>()
        .map(Urls)
}

/// One http:// or https:// URL.
pub fn parse_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    }
    Ok(s.to_string())
}

/// Parses a secret (the coordinator's token).
pub fn parse_secret(s: &str) -> Result<Secret, String> {
    Secret::new(s)
}

/// Parses a positive count, or `off` for none.
pub fn parse_count_or_off(s: &str) -> Result<OrOff<u32>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("{s:?} is not a positive number or \"off\"")),
    }
}

/// Parses `on`/`off` (or `true`/`false`).
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{s:?} is not on or off")),
    }
}

/// `--no-migrate true` means "do not migrate": the setting is stored the
/// way the server reads it.
pub fn parse_no_migrate(s: &str) -> Result<bool, String> {
    s.parse::<bool>()
        .map(|no| !no)
        .map_err(|_| format!("{s:?} is not true or false"))
}

/// Serde adapters for keys whose TOML value is a string parsed as above.
pub mod de {
    use super::*;

    fn parsed<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parsed(d, parse_duration)
    }

    pub fn addr_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<OrOff<SocketAddr>, D::Error> {
        parsed(d, parse_addr_or_off)
    }

    pub fn duration_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<OrOff<Duration>, D::Error> {
        parsed(d, parse_duration_or_off)
    }

    /// In the file, a list: `admin_tokens = ["alice:s3cret"]` (an entry
    /// may then contain a comma).
    pub fn admin_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<AdminTokens, D::Error> {
        let entries = Vec::<String>::deserialize(d)?;
        AdminTokens::parse(entries.iter().map(String::as_str)).map_err(D::Error::custom)
    }

    pub fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        parsed(d, parse_secret).map(Some)
    }

    /// `identity_max_rate = 100` or `"off"` in the file.
    pub fn count_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<OrOff<u32>, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum CountOrOff {
            Count(i64),
            Text(String),
        }
        match CountOrOff::deserialize(d)? {
            CountOrOff::Count(n) => parse_count_or_off(&n.to_string()),
            CountOrOff::Text(s) => parse_count_or_off(&s),
        }
        .map_err(D::Error::custom)
    }

    /// `console = "off"` or `console = false` in the file.
    pub fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OnOff {
            Bool(bool),
            Text(String),
        }
        match OnOff::deserialize(d)? {
            OnOff::Bool(b) => Ok(b),
            OnOff::Text(s) => parse_on_off(&s).map_err(D::Error::custom),
        }
    }

    /// In the file, a list: `alert_webhooks = ["https://..."]`.
    pub fn urls<'de, D: Deserializer<'de>>(d: D) -> Result<Urls, D::Error> {
        let entries = Vec::<String>::deserialize(d)?;
        entries
            .iter()
            .map(|u| parse_url(u))
            .collect::<Result<_, _>>()
            .map(Urls)
            .map_err(D::Error::custom)
    }

    pub fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let s = String::deserialize(d)?;
        parse_url(&s).map(Some).map_err(D::Error::custom)
    }

    /// `no_migrate = true` in the file, a boolean as TOML writes it.
    pub fn no_migrate<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        bool::deserialize(d).map(|no| !no)
    }
}
