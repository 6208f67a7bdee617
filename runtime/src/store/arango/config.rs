//! Where the ArangoDB store lives: its URL, read into server, user,
//! password and database.

/// Where the ArangoDB store lives.
#[derive(Clone, PartialEq, Eq)]
pub struct ArangoConfig {
    /// The server, e.g. `http://127.0.0.1:8529` (no trailing slash).
    pub endpoint: String,
    /// The database (created when missing, if the user may).
    pub database: String,
    /// User for basic authentication.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for ArangoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArangoConfig")
            .field("endpoint", &self.endpoint)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl ArangoConfig {
    /// Reads `http[s]://[user[:password]@]host:port[/database]`. The user
    /// defaults to `root`, the password to empty, the database to `cortex`.
    pub fn parse(url: &str) -> Result<ArangoConfig, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "`{url}`: an ArangoDB URL starts with http:// or https://"
            ));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("`{url}` names no host"))?;
        let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| format!("`{url}`: bad percent-encoding in the user"))
        };
        let username = match parsed.username() {
            "" => "root".to_string(),
            user => decode(user)?,
        };
        let password = decode(parsed.password().unwrap_or(""))?;
        let database = parsed.path().trim_matches('/');
        if database.contains('/') {
            return Err(format!("`{url}`: the path names the database, one segment"));
        }
        Ok(ArangoConfig {
            endpoint: format!("{}://{host}{port}", parsed.scheme()),
            database: if database.is_empty() {
                "cortex".to_string()
            } else {
                database.to_string()
            },
            username,
            password,
        })
    }
}

pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_server_user_and_database() {
        let config = ArangoConfig::parse("https://ops:p%40ss@db.example:8529/team").unwrap();
        assert_eq!(config.endpoint, "https://db.example:8529");
        assert_eq!(config.username, "ops");
        assert_eq!(config.password, "p@ss");
        assert_eq!(config.database, "team");
        let defaults = ArangoConfig::parse("http://127.0.0.1:8529").unwrap();
        assert_eq!(defaults.username, "root");
        assert_eq!(defaults.password, "");
        assert_eq!(defaults.database, "cortex");
        assert!(!format!("{config:?}").contains("p@ss"));
    }

    #[test]
    fn a_bad_url_is_refused_with_the_reason() {
        assert!(
            ArangoConfig::parse("ftp://x")
                .unwrap_err()
                .contains("http://")
        );
        assert!(
            ArangoConfig::parse("http://h:1/a/b")
                .unwrap_err()
                .contains("one segment")
        );
        assert!(
            ArangoConfig::parse("not a url")
                .unwrap_err()
                .contains("not a URL")
        );
    }
}
