//! Settings safe to show: `check-config` prints them and `run` logs them, so the Redis
//! password must never survive into either.

use url::Url;

use super::Settings;

/// What a secret is replaced with.
const MASK: &str = "***";

impl Settings {
    /// A copy whose `redis.url` password (and any `password`-like query parameter) is
    /// `***`. The username is kept: it helps debugging and is not a secret.
    pub fn redacted(&self) -> Settings {
        let mut copy = self.clone();
        copy.redis.url = redact_url(&self.redis.url);
        copy
    }

    /// The redacted settings as TOML, the format of the config file.
    pub fn to_toml_string(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(&self.redacted())
    }
}

/// `redis://user:secret@host` -> `redis://user:***@host`. A URL that does not parse has
/// everything between `://` and the last `@` masked, since its password cannot be found
/// for sure.
pub(crate) fn redact_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else {
        return match (text.find("://"), text.rfind('@')) {
            (Some(start), Some(end)) if start + 3 <= end => {
                format!("{}{MASK}{}", &text[..start + 3], &text[end..])
            }
            _ => text.to_string(),
        };
    };
    if url.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = url.set_password(Some(MASK));
    }
    let has_secret_query = url
        .query_pairs()
        .any(|(k, _)| k.to_ascii_lowercase().contains("pass"));
    if has_secret_query {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.to_ascii_lowercase().contains("pass") {
                    MASK.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_masked_and_the_username_kept() {
        assert_eq!(
            redact_url("rediss://otto:s3cret@redis:6380/1"),
            "rediss://otto:***@redis:6380/1"
        );
        assert_eq!(redact_url("redis://:s3cret@redis"), "redis://:***@redis");
    }

    #[test]
    fn a_url_without_password_is_unchanged() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn a_password_query_parameter_is_masked() {
        let out = redact_url("redis://h:1/?password=s3cret&protocol=resp3");
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("protocol=resp3"), "{out}");
    }

    #[test]
    fn an_unparsable_url_has_its_userinfo_masked() {
        let out = redact_url("redis://u:s3cret@[bad");
        assert!(!out.contains("s3cret"), "{out}");
    }

    #[test]
    fn the_toml_output_parses_back_to_the_redacted_settings() {
        let mut settings = Settings::default();
        settings.redis.url = "redis://u:s3cret@h:1".into();
        let text = settings.to_toml_string().expect("toml");
        assert!(!text.contains("s3cret"), "{text}");
        let back: Settings = toml::from_str(&text).expect("parse back");
        assert_eq!(back, settings.redacted());
    }
}
